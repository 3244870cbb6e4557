-- Append one commit's change record to the log and return its version.
-- KEYS[1]: the version counter, KEYS[2]: the log stream. ARGV[1]: the record, ARGV[2]: max length.
-- The counter starts from the clock (microseconds) so versions keep growing if Redis loses it.
-- Numbers are formatted with %d: Lua would print a 16-digit number in exponent form.
if redis.call('EXISTS', KEYS[1]) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[1], now[1] .. string.format('%06d', tonumber(now[2])))
end
local version = string.format('%d', redis.call('INCR', KEYS[1]))
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], version .. '-0', 'd', ARGV[1])
return version
