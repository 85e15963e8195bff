-- mf.text: tokens, a keyword scorer and a small BM25 index, for routing
-- a request by which intent's words its text is closest to.
--   mf.text.tokens(s [, stop])       lowercase words, stop words removed
--   mf.text.keywords(s, weights)     sum of the weights of the words in s
--   mf.text.bm25(docs [, opts])      an index over docs ({id = text} or
--                                    {text, ...}); idx:score(query) gives
--                                    {{id=, score=}, ...} best first
local mf = require "mf"

local M = {}
mf.text = M

-- A few English stop words; pass your own set to tokens() to change it.
M.stop_words = {}
for w in ([[a an and are as at be but by for from has have i in is it its
  me my of on or so that the this to was we were what when which who will
  with you your]]):gmatch("%S+") do
  M.stop_words[w] = true
end

function M.tokens(s, stop)
  stop = stop or M.stop_words
  local out = {}
  if type(s) ~= "string" then return out end
  for w in s:lower():gmatch("[%w_\128-\255]+") do
    if not stop[w] then out[#out + 1] = w end
  end
  return out
end

-- weights: { word = weight } or a list of words (weight 1 each). Returns
-- the score and the words found.
function M.keywords(s, weights)
  local w = {}
  if weights[1] ~= nil then
    for _, k in ipairs(weights) do w[tostring(k):lower()] = 1 end
  else
    for k, v in pairs(weights) do w[tostring(k):lower()] = tonumber(v) or 0 end
  end
  local score, found, seen = 0, {}, {}
  for _, t in ipairs(M.tokens(s, {})) do
    if w[t] and not seen[t] then
      seen[t] = true
      score = score + w[t]
      found[#found + 1] = t
    end
  end
  return score, found
end

local Index = {}
Index.__index = Index

-- opts: k1 (1.2), b (0.75), stop (a stop word set).
function M.bm25(docs, opts)
  opts = opts or {}
  local idx = setmetatable({ k1 = opts.k1 or 1.2, b = opts.b or 0.75,
                             stop = opts.stop, docs = {}, df = {}, n = 0,
                             avgdl = 0 }, Index)
  local total = 0
  local ids = {}
  for id in pairs(docs) do ids[#ids + 1] = id end
  table.sort(ids, function(x, y) return tostring(x) < tostring(y) end)
  for _, id in ipairs(ids) do
    local tf, len = {}, 0
    for _, t in ipairs(M.tokens(docs[id], idx.stop)) do
      tf[t] = (tf[t] or 0) + 1
      len = len + 1
    end
    for t in pairs(tf) do idx.df[t] = (idx.df[t] or 0) + 1 end
    idx.docs[#idx.docs + 1] = { id = id, tf = tf, len = len }
    idx.n = idx.n + 1
    total = total + len
  end
  idx.avgdl = idx.n > 0 and total / idx.n or 0
  return idx
end

-- The BM25 scores of query against every document, best first (ties by
-- id); documents scoring 0 are left out.
function Index:score(query)
  local q = M.tokens(query, self.stop)
  local out = {}
  for _, d in ipairs(self.docs) do
    local s = 0
    for _, t in ipairs(q) do
      local f = d.tf[t]
      if f then
        local df = self.df[t]
        local idf = math.log(1 + (self.n - df + 0.5) / (df + 0.5))
        local norm = 1 - self.b + self.b * (self.avgdl > 0 and d.len / self.avgdl or 1)
        s = s + idf * f * (self.k1 + 1) / (f + self.k1 * norm)
      end
    end
    if s > 0 then out[#out + 1] = { id = d.id, score = s } end
  end
  table.sort(out, function(x, y)
    if x.score ~= y.score then return x.score > y.score end
    return tostring(x.id) < tostring(y.id)
  end)
  return out
end

-- The best document's id and score, or nil.
function Index:best(query)
  local r = self:score(query)[1]
  if r then return r.id, r.score end
  return nil
end

return M
