-- flowguard GCRA, version 1: one bucket per key, time from the server.
--
-- KEYS[1]  the bucket; it holds "<seconds>:<nanoseconds>", the theoretical
--          arrival time (TAT) in Unix time, and expires when the bucket is
--          full again (so idle buckets cost no memory).
-- ARGV[1]  T, nanoseconds per token (emission interval)
-- ARGV[2]  tau = burst * T, nanoseconds (below 2^52, checked by the client)
-- ARGV[3]  need: the fewest tokens to take (1..=burst)
-- ARGV[4]  want: the most tokens to take (need..=burst), for a reservation
-- ARGV[5], ARGV[6]  optional "now" as seconds and nanoseconds: for tests
--          only; the limiter never sends them and always uses TIME.
--
-- Reply: { granted, wait_ns, left, now_seconds, now_nanoseconds }
--   granted  0 when refused, else need..=want tokens taken
--   wait_ns  when refused: nanoseconds from now until `need` tokens are
--            there (exact: refused one nanosecond earlier); else 0
--   left     whole tokens left in the bucket after this call
--
-- The rule is the crate's GCRA (src/rate/gcra.rs) written on the debt
-- d = max(0, TAT - now): take n tokens iff d + n*T <= tau, then
-- TAT' = now + d + n*T; refused, the wait is d + n*T - tau. Every number
-- stays below 2^53, so Lua's doubles hold them exactly.
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local need = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local BILLION = 1000000000

local now_s, now_ns
if ARGV[6] then
  now_s = tonumber(ARGV[5])
  now_ns = tonumber(ARGV[6])
else
  -- Redis before 5 replicates scripts verbatim and refuses writes after
  -- TIME unless told to replicate effects; later versions always do.
  if redis.replicate_commands then redis.replicate_commands() end
  local time = redis.call('TIME')
  now_s = tonumber(time[1])
  now_ns = tonumber(time[2]) * 1000
end

local debt = 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local s, ns = string.match(stored, '^(%d+):(%d+)$')
  if not s then
    return redis.error_reply('flowguard: key ' .. KEYS[1] .. ' does not hold a GCRA state')
  end
  debt = (tonumber(s) - now_s) * BILLION + (tonumber(ns) - now_ns)
  if debt < 0 then debt = 0 end
end

-- Whole tokens in the bucket: floor((tau - debt) / T), made exact.
local credit = tau - debt
local left = 0
if credit >= t then
  left = math.floor(credit / t)
  if left * t > credit then left = left - 1 end
  if (left + 1) * t <= credit then left = left + 1 end
end

if left < need then
  return { 0, debt + need * t - tau, left, now_s, now_ns }
end

local grant = want
if left < grant then grant = left end
local new_debt = debt + grant * t
local total = now_ns + new_debt
local carry = math.floor(total / BILLION)
local rest = total - carry * BILLION
if rest < 0 then
  carry = carry - 1
  rest = rest + BILLION
elseif rest >= BILLION then
  carry = carry + 1
  rest = rest - BILLION
end
redis.call('SET', KEYS[1], string.format('%d:%09d', now_s + carry, rest),
  'PX', math.floor(new_debt / 1000000) + 1)
return { grant, 0, left - grant, now_s, now_ns }
