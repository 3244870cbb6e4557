-- The instances one change record affects: one round trip per record.
-- ARGV[1]: key prefix, ARGV[2]: JSON {"rows": [[table, old, new(, columns)], ...], "opaque": [tables]}
-- where old/new are row images {column: value as key text} or null, and columns (an update's
-- only) the columns it changed: an instance matched by such a row is affected only if its
-- <p>cols:<id> hash has no field for the table or names one of them.
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
local filtered = {}  -- instance id -> true, from the rows naming their changed columns
for _, row in ipairs(record['rows']) do
  local table_name = row[1]
  local row_sources = sources
  if type(row[4]) == 'table' then
    row_sources = {}
  end
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
          row_sources[#row_sources + 1] = p .. 'conj:' .. table_name .. ':' .. scheme .. ':' .. table.concat(values, '\31')
        else
          row_sources[#row_sources + 1] = p .. 'scheme:' .. table_name .. ':' .. scheme
        end
      end
    end
  end
  if row_sources ~= sources and #row_sources > 0 then
    local changed = {}
    for _, column in ipairs(row[4]) do
      changed[column] = true
    end
    for _, id in ipairs(redis.call('SUNION', unpack(row_sources))) do
      if not filtered[id] then
        local columns = redis.call('HGET', p .. 'cols:' .. id, table_name)
        local affected = columns == false
        if not affected then
          for column in string.gmatch(columns, '[^,]+') do
            if changed[column] then
              affected = true
              break
            end
          end
        end
        if affected then
          filtered[id] = true
        end
      end
    end
  end
end

local found = {}
for id in pairs(filtered) do
  found[#found + 1] = id
end
if #sources == 0 then
  return found
end
for _, id in ipairs(redis.call('SUNION', unpack(sources))) do
  if not filtered[id] then
    found[#found + 1] = id
  end
end
return found
