-- mf.match: glob, regex and word matching for routing rules.
--   mf.match.glob(pattern, s)        shell glob: * ? [abc] [a-z] [!x], \ escapes
--   mf.match.glob_any(patterns, s)   the first pattern of a list that matches
--   mf.match.regex(s, re [, flags])  POSIX extended regex (mf.regex.find);
--                                    flags "i" ignores case
--   mf.match.words(s, words [, set]) the words of a list found in s as whole
--                                    words, case-insensitive (set: s's
--                                    words, when several lists are tried)
--   mf.match.rule(rule, facts)       one routing rule against request facts
--   mf.match.group()                 the running request's consumer group
local mf = require "mf"

local M = {}
mf.match = M

-- A glob as an anchored Lua pattern.
local function glob_to_pattern(g)
  local out, i, n = { "^" }, 1, #g
  while i <= n do
    local c = g:sub(i, i)
    if c == "*" then
      out[#out + 1] = ".-"
    elseif c == "?" then
      out[#out + 1] = "."
    elseif c == "[" then
      local j = g:find("]", i + 2, true)
      if j == nil then
        out[#out + 1] = "%["
      else
        local set = g:sub(i + 1, j - 1)
        if set:sub(1, 1) == "!" then set = "^" .. set:sub(2) end
        set = set:gsub("%%", "%%%%")
        out[#out + 1] = "[" .. set .. "]"
        i = j
      end
    elseif c == "\\" and i < n then
      i = i + 1
      out[#out + 1] = "%" .. g:sub(i, i)
    elseif c:match("%W") then
      out[#out + 1] = "%" .. c
    else
      out[#out + 1] = c
    end
    i = i + 1
  end
  out[#out + 1] = "$"
  return table.concat(out)
end

local patterns = {}
local npatterns = 0

function M.glob(g, s)
  if type(g) ~= "string" or type(s) ~= "string" then return false end
  local p = patterns[g]
  if p == nil then
    p = glob_to_pattern(g)
    if npatterns >= 1000 then patterns, npatterns = {}, 0 end
    patterns[g] = p
    npatterns = npatterns + 1
  end
  return s:find(p) ~= nil
end

function M.glob_any(list, s)
  if type(list) == "string" then list = { list } end
  for _, g in ipairs(list or {}) do
    if M.glob(g, s) then return g end
  end
  return nil
end

-- Whether s matches the POSIX extended regex re: the start and end of the
-- match, then its captures; nil when it does not match; raises an error
-- for a regex that does not compile. Needs the host (mf.regex).
function M.regex(s, re, flags)
  if type(s) ~= "string" then return nil end
  if not mf.regex then error("mf.match.regex: mf.regex is not available", 2) end
  local r = mf.regex.find(s, re, flags)
  return r
end

-- Lowercase words of s (letters, digits, _ and bytes >= 0x80).
local function word_set(s)
  local set = {}
  for w in s:lower():gmatch("[%w_\128-\255]+") do set[w] = true end
  return set
end

-- The words (or phrases) of `words` found in s: whole words, case
-- insensitive; a phrase of several words matches as a substring of the
-- lowercased text. Returns the list of those found (empty when none).
function M.words(s, words, set)
  local found = {}
  if type(s) ~= "string" or type(words) ~= "table" then return found end
  set = set or word_set(s)
  local lower
  for _, w in ipairs(words) do
    local lw = tostring(w):lower()
    if lw:find("[^%w_\128-\255]") then
      lower = lower or s:lower()
      if lower:find(lw, 1, true) then found[#found + 1] = w end
    elseif set[lw] then
      found[#found + 1] = w
    end
  end
  return found
end

-- The running request's consumer group: the consumer record's (an
-- authentication stage sets it), else the x-manifold-group header a
-- stage set (a client's x-manifold-* headers never reach stages); nil.
function M.group()
  local rec = mf.req.consumer_record and mf.req.consumer_record()
  if rec and type(rec.group) == "string" and rec.group ~= "" then return rec.group end
  return mf.req.get_header("x-manifold-group")
end

-- One routing rule against the facts of a request. A rule holds any of:
--   words = {...}      a word of the list in facts.text
--   regex = "..." | {...}  a regex matching facts.text (flags "i")
--   glob = "..." | {...}   a glob matching facts.text whole
--   headers = { name = glob, ... }  each header present and matching
--   consumer = glob | {globs}       facts.consumer matches
--   group = glob | {globs}          facts.group matches
--   min_tokens = n, max_tokens = n  facts.tokens within bounds
-- Every condition given must hold (and); a list inside one is an or.
-- facts: { text, headers = {name = value (lowercase names)}, consumer,
-- group, tokens }. Returns true and a reason ("words: bug"), or false.
function M.rule(rule, facts)
  local why = {}
  local text = facts.text or ""
  if rule.words then
    -- the text's words, made once for every rule on the same facts
    if facts.word_set == nil then facts.word_set = word_set(text) end
    local f = M.words(text, rule.words, facts.word_set)
    if #f == 0 then return false end
    why[#why + 1] = "words: " .. table.concat(f, ",")
  end
  if rule.regex then
    if not mf.regex then error("mf.match.regex: mf.regex is not available", 2) end
    local list = type(rule.regex) == "table" and rule.regex or { rule.regex }
    local hit
    for _, re in ipairs(list) do
      if mf.regex.test(text, re, rule.regex_flags or "i") then hit = re break end
    end
    if not hit then return false end
    why[#why + 1] = "regex: " .. hit
  end
  if rule.glob then
    local g = M.glob_any(rule.glob, text)
    if not g then return false end
    why[#why + 1] = "glob: " .. g
  end
  if rule.headers then
    for name, g in pairs(rule.headers) do
      local v = facts.headers and facts.headers[name:lower()]
      if v == nil or not M.glob_any(g, v) then return false end
    end
    why[#why + 1] = "headers"
  end
  if rule.consumer then
    if not facts.consumer or not M.glob_any(rule.consumer, facts.consumer) then
      return false
    end
    why[#why + 1] = "consumer: " .. facts.consumer
  end
  if rule.group then
    if not facts.group or not M.glob_any(rule.group, facts.group) then
      return false
    end
    why[#why + 1] = "group: " .. facts.group
  end
  local tokens = facts.tokens or 0
  if rule.min_tokens and tokens < rule.min_tokens then return false end
  if rule.max_tokens and tokens > rule.max_tokens then return false end
  if rule.min_tokens or rule.max_tokens then
    why[#why + 1] = "tokens: " .. tokens
  end
  if #why == 0 then return false end
  return true, table.concat(why, "; ")
end

return M
