-- mf.vec: vectors (Lua arrays of numbers), for embedding similarity.
--   mf.vec.dot(a, b), mf.vec.norm(a), mf.vec.normalize(a)
--   mf.vec.cosine(a, b)              in [-1, 1]; 0 when a vector is zero
--   mf.vec.mean(list)                the centroid of a list of vectors
--   mf.vec.rank(q, named)            named = {name = vector | {vectors}}:
--                                    {{name=, score=}, ...} by the best
--                                    cosine of each name, best first
local mf = require "mf"

local M = {}
mf.vec = M

local function check(a, b)
  if #a ~= #b then
    error(("mf.vec: vectors of different lengths (%d and %d)"):format(#a, #b), 3)
  end
end

function M.dot(a, b)
  check(a, b)
  local s = 0
  for i = 1, #a do s = s + a[i] * b[i] end
  return s
end

function M.norm(a)
  local s = 0
  for i = 1, #a do s = s + a[i] * a[i] end
  return math.sqrt(s)
end

function M.normalize(a)
  local n, out = M.norm(a), {}
  for i = 1, #a do out[i] = n > 0 and a[i] / n or 0 end
  return out
end

function M.cosine(a, b)
  check(a, b)
  local d, na, nb = 0, 0, 0
  for i = 1, #a do
    local x, y = a[i], b[i]
    d = d + x * y
    na = na + x * x
    nb = nb + y * y
  end
  if na == 0 or nb == 0 then return 0 end
  return d / math.sqrt(na * nb)
end

function M.mean(list)
  local out, n = {}, #list
  if n == 0 then return out end
  for i = 1, #list[1] do
    local s = 0
    for j = 1, n do s = s + list[j][i] end
    out[i] = s / n
  end
  return out
end

function M.rank(q, named)
  local out = {}
  for name, v in pairs(named) do
    local best = -2
    local list = type(v[1]) == "table" and v or { v }
    for _, e in ipairs(list) do
      local c = M.cosine(q, e)
      if c > best then best = c end
    end
    out[#out + 1] = { name = name, score = best }
  end
  table.sort(out, function(x, y)
    if x.score ~= y.score then return x.score > y.score end
    return tostring(x.name) < tostring(y.name)
  end)
  return out
end

return M
