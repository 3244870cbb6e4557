-- The instances one change record affects: one round trip per record.
-- ARGV[1]: key prefix, ARGV[2]: JSON {"rows": [[table, old, new], ...], "opaque": [tables]}
-- where old/new are row images {column: value as key text} or null.
-- A scheme column missing from an image matches every value (widens); an opaque table, or
-- "*", matches every reader of it.
local p = ARGV[1]
local record = cjson.decode(ARGV[2])
local sources = {}

local function all_of_table(table_name)
  for _, scheme in ipairs(redis.call('SMEMBERS', p .. 'schemes:' .. table_name)) do
    sources[#sources + 1] = p .. 'scheme:' .. table_name .. ':' .. scheme
  end
end

for _, table_name in ipairs(record['opaque']) do
  if table_name == '*' then
    return redis.call('SMEMBERS', p .. 'instances')
  end
  all_of_table(table_name)
end
all_of_table('*')

local schemes_of = {}
for _, row in ipairs(record['rows']) do
  local table_name = row[1]
  local schemes = schemes_of[table_name]
  if schemes == nil then
    schemes = redis.call('SMEMBERS', p .. 'schemes:' .. table_name)
    schemes_of[table_name] = schemes
  end
  for i = 2, 3 do
    local image = row[i]
    if type(image) == 'table' then
      for _, scheme in ipairs(schemes) do
        local values = {}
        local complete = true
        for column in string.gmatch(scheme, '[^,]+') do
          local value = image[column]
          if value == nil then
            complete = false
            break
          end
          values[#values + 1] = value
        end
        if complete then
          sources[#sources + 1] = p .. 'conj:' .. table_name .. ':' .. scheme .. ':' .. table.concat(values, '\31')
        else
          sources[#sources + 1] = p .. 'scheme:' .. table_name .. ':' .. scheme
        end
      end
    end
  end
end

if #sources == 0 then
  return {}
end
return redis.call('SUNION', unpack(sources))
