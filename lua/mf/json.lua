-- mf.json conveniences on top of mf.json.encode/decode (C):
--   mf.json.get(t, path [, default])  t.a.b[2] as get(t, "a.b.2") or
--                                     get(t, {"a", "b", 2}); default when a
--                                     step is missing or not a table
--   mf.json.set(t, path, v)           creates the tables on the way
--   mf.json.copy(v)                   a deep copy (arrays stay arrays)
--   mf.json.is_array(t)               a JSON array (decoded or marked)
local mf = require "mf"

local json = mf.json

local function steps(path)
  if type(path) == "table" then return path end
  local out = {}
  for part in tostring(path):gmatch("[^.]+") do
    out[#out + 1] = tonumber(part) or part
  end
  return out
end

function json.get(t, path, default)
  local cur = t
  for _, k in ipairs(steps(path)) do
    if type(cur) ~= "table" then return default end
    cur = cur[k]
    if cur == nil or cur == json.null then return default end
  end
  return cur
end

function json.set(t, path, v)
  local s = steps(path)
  if #s == 0 then error("mf.json.set: empty path", 2) end
  local cur = t
  for i = 1, #s - 1 do
    local nxt = cur[s[i]]
    if type(nxt) ~= "table" then
      nxt = type(s[i + 1]) == "number" and json.array({}) or {}
      cur[s[i]] = nxt
    end
    cur = nxt
  end
  cur[s[#s]] = v
  return t
end

function json.copy(v, seen)
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local out = {}
  seen[v] = out
  for k, x in pairs(v) do out[json.copy(k, seen)] = json.copy(x, seen) end
  return setmetatable(out, getmetatable(v))
end

function json.is_array(t)
  if type(t) ~= "table" then return false end
  local m = getmetatable(t)
  if m and m.__jsontype == "array" then return true end
  return t[1] ~= nil and next(t, #t) == nil
end

return json
