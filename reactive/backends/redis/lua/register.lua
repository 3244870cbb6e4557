-- Replace the read set of one query instance in the index (after django-cacheops' layout).
-- ARGV[1]: key prefix, ARGV[2]: instance id, ARGV[3]: JSON list of [table, scheme, values]
-- entries (scheme: sorted column names joined by ","; values: the row's values, each as key
-- text, joined by "\31"), or "" to remove the instance. ARGV[4]: JSON {table: columns joined
-- by ","}, the columns the instance's result depends on, for the tables where they are known.
--   <p>schemes:<table>            the schemes some instance constrains on the table
--   <p>scheme:<table>:<scheme>    the instances using that scheme (matched when a row's image
--                                 lacks one of its columns)
--   <p>conj:<table>:<scheme>:<values>   the instances bound by those values
--   <p>rev:<id>                   reverse index: what the instance added, for exact removal
--   <p>cols:<id>                  hash: table -> the columns the instance depends on ("" for
--                                 none); a table missing depends on every column
--   <p>instances                  every instance in the index
local p, id = ARGV[1], ARGV[2]
local rev = p .. 'rev:' .. id

for _, entry in ipairs(redis.call('SMEMBERS', rev)) do
  local table_name, scheme, values = string.match(entry, '^([^\30]*)\30([^\30]*)\30(.*)$')
  local conj = p .. 'conj:' .. table_name .. ':' .. scheme .. ':' .. values
  redis.call('SREM', conj, id)
  local scheme_key = p .. 'scheme:' .. table_name .. ':' .. scheme
  redis.call('SREM', scheme_key, id)
  if redis.call('SCARD', scheme_key) == 0 then
    redis.call('SREM', p .. 'schemes:' .. table_name, scheme)
  end
end
redis.call('DEL', rev)
redis.call('DEL', p .. 'cols:' .. id)
redis.call('SREM', p .. 'instances', id)

if ARGV[3] == '' then
  return 0
end
local entries = cjson.decode(ARGV[3])
for _, entry in ipairs(entries) do
  local table_name, scheme, values = entry[1], entry[2], entry[3]
  redis.call('SADD', p .. 'conj:' .. table_name .. ':' .. scheme .. ':' .. values, id)
  redis.call('SADD', p .. 'scheme:' .. table_name .. ':' .. scheme, id)
  redis.call('SADD', p .. 'schemes:' .. table_name, scheme)
  redis.call('SADD', rev, table_name .. '\30' .. scheme .. '\30' .. values)
end
if ARGV[4] ~= nil and ARGV[4] ~= '' then
  for table_name, columns in pairs(cjson.decode(ARGV[4])) do
    redis.call('HSET', p .. 'cols:' .. id, table_name, columns)
  end
end
redis.call('SADD', p .. 'instances', id)
return #entries
