local text = require "mf.text"

describe("mf.text", function()
  it("tokenizes to lowercase words without stop words", function()
    assert.same({ "fix", "failing", "test_case", "42" }, text.tokens("Fix the failing test_case #42!"))
    assert.same({ "the", "cat" }, text.tokens("The cat", {}))
  end)
  it("scores keywords by weight, each word once", function()
    local s, found = text.keywords("bug bug in the compiler", { bug = 2, compiler = 1, poem = 5 })
    assert.equal(3, s)
    assert.same({ "bug", "compiler" }, found)
    assert.equal(1, (text.keywords("a Poem", { "poem" })))
  end)
end)

describe("mf.text.bm25", function()
  local idx = text.bm25({
    code = "code function bug compile error stack trace debug",
    math = "prove integral equation theorem derivative",
    writing = "poem story essay write letter",
  })
  it("ranks the document sharing the rarest query words first", function()
    local r = idx:score("why does this function not compile")
    assert.equal("code", r[1].id)
    assert.equal(1, #r)
    assert.equal("math", (idx:best("solve this integral equation")))
  end)
  it("leaves out documents with no query word", function()
    assert.same({}, idx:score("hello there"))
    assert.is_nil(idx:best("hello there"))
  end)
  it("weighs repeated terms with saturation and length normalisation", function()
    local i2 = text.bm25({ a = "cat", b = "cat cat cat dog dog dog dog dog dog" })
    local r = i2:score("cat")
    assert.equal("a", r[1].id, "the short document is the better match")
    assert.truthy(r[1].score > r[2].score)
    assert.truthy(r[2].score > 0)
  end)
  it("gives the score of the formula", function()
    local i3 = text.bm25({ "apple banana", "cherry" }, { k1 = 1.2, b = 0.75 })
    local r = i3:score("apple")
    -- n = 2, df = 1, idf = ln(1 + 1.5/1.5); len 2, avgdl 1.5
    local norm = 1 - 0.75 + 0.75 * 2 / 1.5
    assert.near(math.log(2) * 2.2 / (1 + 1.2 * norm), r[1].score, 1e-9)
    assert.equal(1, r[1].id)
  end)
end)
