/*
 * The provider catalogue: every provider Manifold knows, with what a
 * config needs for it, and the renderers of it (a config's providers,
 * README's table). To add a provider: add its entry here (its type must be
 * served by a plugin: a preset of provider-openai or another provider
 * plugin), then regenerate configs/manifold.yaml and README.md
 * (scripts/catalogue.sh); tests/integration/catalogue.test.mjs checks both.
 */
#include "cli/catalogue.h"

#include <stdarg.h>
#include <string.h>

#define OPENAI "provider-openai"

/* The order is `manifold init`'s numbering and the default config's. */
const mf_catalogue_entry_t mf_catalogue[] = {
    {.name = "openai",
     .title = "OpenAI",
     .plugin = OPENAI,
     .key_env = "OPENAI_API_KEY",
     .url_env = "OPENAI_BASE_URL",
     .url = "https://api.openai.com/v1",
     .models = "gpt-* o1* o3* o4* chatgpt-* text-embedding-* gpt-4o "
               "gpt-4o-mini gpt-4.1 gpt-4.1-mini o3-mini "
               "text-embedding-3-small text-embedding-3-large"},
    {.name = "anthropic",
     .title = "Anthropic (Messages API)",
     .plugin = "provider-anthropic",
     .about = "build/plugins/provider-anthropic.so",
     .key_env = "ANTHROPIC_API_KEY",
     .url_env = "ANTHROPIC_BASE_URL",
     .url = "https://api.anthropic.com",
     .models = "claude-* claude-opus-4-1 claude-sonnet-4-5 claude-haiku-4-5 "
               "claude-sonnet-4-0"},
    {.name = "gemini",
     .title = "Google Gemini (Generative Language API)",
     .plugin = "provider-gemini",
     .about = "build/plugins/provider-gemini.so",
     .key_env = "GEMINI_API_KEY",
     .url_env = "GEMINI_BASE_URL",
     .url = "https://generativelanguage.googleapis.com",
     .models = "gemini-* gemini-embedding-* text-embedding-004 "
               "gemini-2.5-pro gemini-2.5-flash gemini-2.5-flash-lite "
               "gemini-embedding-001"},
    {.name = "vertex",
     .title = "Google Vertex AI (service-account key file)",
     .plugin = "provider-gemini",
     .about = "service-account key file -> OAuth token (JWT)",
     .key_env = "GOOGLE_APPLICATION_CREDENTIALS",
     .url_env = "VERTEX_BASE_URL",
     .url = "https://aiplatform.googleapis.com",
     .url_about = "made regional",
     .options = "    project: ${VERTEX_PROJECT:-}          # default: the "
                "key's project_id\n"
                "    location: ${VERTEX_LOCATION:-us-central1}\n",
     .models = "vertex/*",
     .models_about = "vertex/gemini-2.5-pro",
     .prefixed = 1},
    {.name = "bedrock",
     .title = "Amazon Bedrock (SigV4 or a Bedrock API key)",
     .plugin = "provider-bedrock",
     .about = "SigV4 with the AWS keys, or a Bedrock API key",
     .key_env = "AWS_ACCESS_KEY_ID:AWS_SECRET_ACCESS_KEY",
     .key_env_alt = "AWS_BEARER_TOKEN_BEDROCK",
     .url_env = "BEDROCK_BASE_URL",
     .url = "https://bedrock-runtime.amazonaws.com",
     .url_about = "made regional",
     .options = "    region: ${AWS_REGION:-us-east-1}\n",
     .models = "bedrock/* anthropic.* amazon.* meta.* mistral.* cohere.* us.* "
               "eu.* apac.*",
     .prefixed = 1},
    {.name = "azure",
     .title = "Azure OpenAI (deployments)",
     .plugin = OPENAI,
     .about = "deployments, api-version, api-key header",
     .key_env = "AZURE_OPENAI_API_KEY",
     .url_env = "AZURE_OPENAI_BASE_URL",
     .url = "https://your-resource.openai.azure.com",
     .options = "    api_version: ${AZURE_OPENAI_API_VERSION:-2024-10-21}\n"
                "    # deployments: { gpt-4o: my-gpt4o-deployment }\n",
     .models = "azure/*",
     .models_about = "azure/<deployment>",
     .prefixed = 1},
    {.name = "deepseek",
     .title = "DeepSeek",
     .plugin = OPENAI,
     .key_env = "DEEPSEEK_API_KEY",
     .url_env = "DEEPSEEK_BASE_URL",
     .url = "https://api.deepseek.com/v1",
     .models = "deepseek-* deepseek-chat deepseek-reasoner"},
    {.name = "qwen",
     .title = "Qwen (DashScope compatible mode)",
     .plugin = OPENAI,
     .key_env = "DASHSCOPE_API_KEY",
     .url_env = "DASHSCOPE_BASE_URL",
     .url = "https://dashscope.aliyuncs.com/compatible-mode/v1",
     .models = "qwen-* qwq-* qwen2* qwen3* text-embedding-v* qwen-max "
               "qwen-plus qwen-turbo"},
    {.name = "moonshot",
     .title = "Moonshot (Kimi)",
     .plugin = OPENAI,
     .key_env = "MOONSHOT_API_KEY",
     .url_env = "MOONSHOT_BASE_URL",
     .url = "https://api.moonshot.cn/v1",
     .models = "moonshot-* kimi-* moonshot-v1-8k kimi-k2-0711-preview"},
    {.name = "zhipu",
     .title = "Zhipu (GLM)",
     .plugin = OPENAI,
     .key_env = "ZHIPU_API_KEY",
     .url_env = "ZHIPU_BASE_URL",
     .url = "https://open.bigmodel.cn/api/paas/v4",
     .models = "glm-* embedding-* glm-4-plus glm-4-flash"},
    {.name = "doubao",
     .title = "Doubao (Volcengine Ark)",
     .plugin = OPENAI,
     .key_env = "ARK_API_KEY",
     .url_env = "ARK_BASE_URL",
     .url = "https://ark.cn-beijing.volces.com/api/v3",
     .models = "doubao-* ep-*"},
    {.name = "hunyuan",
     .title = "Tencent Hunyuan",
     .plugin = OPENAI,
     .key_env = "HUNYUAN_API_KEY",
     .url_env = "HUNYUAN_BASE_URL",
     .url = "https://api.hunyuan.cloud.tencent.com/v1",
     .models = "hunyuan-*"},
    {.name = "qianfan",
     .title = "Baidu Qianfan (v2)",
     .plugin = OPENAI,
     .key_env = "QIANFAN_API_KEY",
     .url_env = "QIANFAN_BASE_URL",
     .url = "https://qianfan.baidubce.com/v2",
     .models = "ernie-* ERNIE-*"},
    {.name = "minimax",
     .title = "MiniMax",
     .plugin = OPENAI,
     .key_env = "MINIMAX_API_KEY",
     .url_env = "MINIMAX_BASE_URL",
     .url = "https://api.minimax.chat/v1",
     .models = "MiniMax-* abab*"},
    {.name = "stepfun",
     .title = "StepFun",
     .plugin = OPENAI,
     .key_env = "STEPFUN_API_KEY",
     .url_env = "STEPFUN_BASE_URL",
     .url = "https://api.stepfun.com/v1",
     .models = "step-*"},
    {.name = "yi",
     .title = "01.AI Yi",
     .plugin = OPENAI,
     .key_env = "YI_API_KEY",
     .url_env = "YI_BASE_URL",
     .url = "https://api.lingyiwanwu.com/v1",
     .models = "yi-*"},
    {.name = "baichuan",
     .title = "Baichuan",
     .plugin = OPENAI,
     .key_env = "BAICHUAN_API_KEY",
     .url_env = "BAICHUAN_BASE_URL",
     .url = "https://api.baichuan-ai.com/v1",
     .models = "Baichuan* baichuan*"},
    {.name = "spark",
     .title = "iFlytek Spark",
     .plugin = OPENAI,
     .key_env = "SPARK_API_KEY",
     .url_env = "SPARK_BASE_URL",
     .url = "https://spark-api-open.xf-yun.com/v1",
     .models = "spark/*",
     .prefixed = 1},
    {.name = "siliconflow",
     .title = "SiliconFlow",
     .plugin = OPENAI,
     .key_env = "SILICONFLOW_API_KEY",
     .url_env = "SILICONFLOW_BASE_URL",
     .url = "https://api.siliconflow.cn/v1",
     .models = "siliconflow/*",
     .prefixed = 1},
    {.name = "groq",
     .title = "Groq",
     .plugin = OPENAI,
     .key_env = "GROQ_API_KEY",
     .url_env = "GROQ_BASE_URL",
     .url = "https://api.groq.com/openai/v1",
     .models = "groq/*",
     .prefixed = 1},
    {.name = "mistral",
     .title = "Mistral",
     .plugin = OPENAI,
     .key_env = "MISTRAL_API_KEY",
     .url_env = "MISTRAL_BASE_URL",
     .url = "https://api.mistral.ai/v1",
     .models = "mistral-* codestral-* ministral-* pixtral-* magistral-* "
               "open-mistral-*"},
    {.name = "together",
     .title = "Together AI",
     .plugin = OPENAI,
     .key_env = "TOGETHER_API_KEY",
     .url_env = "TOGETHER_BASE_URL",
     .url = "https://api.together.xyz/v1",
     .models = "together/*",
     .prefixed = 1},
    {.name = "fireworks",
     .title = "Fireworks AI",
     .plugin = OPENAI,
     .key_env = "FIREWORKS_API_KEY",
     .url_env = "FIREWORKS_BASE_URL",
     .url = "https://api.fireworks.ai/inference/v1",
     .models = "fireworks/* accounts/fireworks/models/*",
     .prefixed = 1},
    {.name = "openrouter",
     .title = "OpenRouter",
     .plugin = OPENAI,
     .key_env = "OPENROUTER_API_KEY",
     .url_env = "OPENROUTER_BASE_URL",
     .url = "https://openrouter.ai/api/v1",
     .models = "openrouter/*",
     .prefixed = 1},
    {.name = "xai",
     .title = "xAI (Grok)",
     .plugin = OPENAI,
     .key_env = "XAI_API_KEY",
     .url_env = "XAI_BASE_URL",
     .url = "https://api.x.ai/v1",
     .models = "grok-*"},
    {.name = "perplexity",
     .title = "Perplexity",
     .plugin = OPENAI,
     .key_env = "PERPLEXITY_API_KEY",
     .url_env = "PERPLEXITY_BASE_URL",
     .url = "https://api.perplexity.ai",
     .models = "sonar* r1-1776"},
    {.name = "vllm",
     .title = "vLLM (OpenAI-compatible server)",
     .plugin = OPENAI,
     .key_env = "VLLM_API_KEY",
     .url_env = "VLLM_BASE_URL",
     .url = "http://127.0.0.1:8000/v1",
     .models = "vllm/*",
     .prefixed = 1},
    {.name = "ollama",
     .title = "Ollama (local, no key)",
     .plugin = OPENAI,
     .url_env = "OLLAMA_BASE_URL",
     .url = "http://127.0.0.1:11434/v1",
     .models = "ollama/* llama* gemma* mistral* phi*",
     .models_about = "ollama/qwen2.5:7b is sent as qwen2.5:7b",
     .prefixed = 1},
};

const size_t mf_catalogue_len = sizeof(mf_catalogue) / sizeof(mf_catalogue[0]);

/* Column where a trailing comment starts, when the line is shorter. */
#define COMMENT_COL 31
/* Lines of a wrapped models list stay within this. */
#define WRAP_COL 79

const mf_catalogue_entry_t *
mf_catalogue_find(const char *name)
{
    size_t i;

    for (i = 0; i < mf_catalogue_len; i++) {
        if (strcmp(mf_catalogue[i].name, name) == 0) {
            return &mf_catalogue[i];
        }
    }
    return NULL;
}

/* Ends a line of width col with "  # about" (aligned) and a newline. */
static void
end_line(FILE *f, int col, const char *about)
{
    if (about != NULL) {
        fprintf(f, "%*s# %s", col < COMMENT_COL ? COMMENT_COL - col : 2, "",
                about);
    }
    fputc('\n', f);
}

/* A YAML double-quoted scalar of s. */
static void
yaml_quote(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            fputc('\\', f);
        }
        fputc(*s, f);
    }
    fputc('"', f);
}

/* "${A}:${B}" of the variable list "A:B", quoted. */
static void
write_key_vars(FILE *f, const char *vars)
{
    const char *p = vars;

    fputc('"', f);
    while (*p) {
        size_t n = strcspn(p, ":");

        fprintf(f, "%s${%.*s}", p == vars ? "" : ":", (int)n, p);
        p += n + (p[n] == ':');
    }
    fputc('"', f);
}

/* Prints like fprintf, or with f NULL only counts. */
static int
out(FILE *f, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = f ? vfprintf(f, fmt, ap) : vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    return n;
}

/* Writes `models: [...]` wrapped within WRAP_COL, to f or, with f NULL,
 * nowhere; returns the width of its last line. */
static int
models_list(FILE *f, const char *models)
{
    const char *p = models;
    int col = out(f, "    models: [");
    int indent = col, first = 1;

    while (*p) {
        size_t n = strcspn(p, " ");
        int w = (int)n + 2; /* quotes */

        if (!first) {
            col += out(f, ",");
            if (col + 1 + w + 1 > WRAP_COL) {
                col = out(f, "\n%*s", indent, "") - 1;
            } else {
                col += out(f, " ");
            }
        }
        col += out(f, "\"%.*s\"", (int)n, p);
        first = 0;
        p += n;
        p += strspn(p, " ");
    }
    return col + out(f, "]");
}

/* The models line(s) with about after them, or above them when the line
 * would grow past WRAP_COL. */
static void
write_models(FILE *f, const char *models, const char *about)
{
    int col = models_list(NULL, models);

    if (about != NULL &&
        (col < COMMENT_COL ? COMMENT_COL : col + 2) + 2 + (int)strlen(about) >
            WRAP_COL) {
        fprintf(f, "    # %s\n", about);
        about = NULL;
    }
    end_line(f, models_list(f, models), about);
}

void
mf_catalogue_write_provider(FILE *f, const mf_catalogue_entry_t *e,
                            const char *key_env, const char *key,
                            const char *base_url)
{
    int col;

    fprintf(f, "  - name: %s\n", e->name);
    col = fprintf(f, "    type: %s", e->name);
    end_line(f, col, e->about);
    col = fprintf(f, "    base_url: ");
    if (base_url != NULL) {
        yaml_quote(f, base_url);
        fputc('\n', f);
    } else {
        col += fprintf(f, "${%s:-%s}", e->url_env, e->url);
        end_line(f, col, e->url_about);
    }
    if (key != NULL) {
        fprintf(f, "    keys: [");
        yaml_quote(f, key);
        fprintf(f, "]\n");
    } else if (key_env != NULL || e->key_env != NULL) {
        fprintf(f, "    keys: [");
        write_key_vars(f, key_env ? key_env : e->key_env);
        if (key_env == NULL && e->key_env_alt != NULL) {
            fprintf(f, ", ");
            write_key_vars(f, e->key_env_alt);
        }
        fprintf(f, "]\n");
    } else {
        fprintf(f, "    # no keys: it needs none\n");
    }
    if (e->options != NULL) {
        fputs(e->options, f);
    }
    write_models(f, e->models, e->models_about);
    if (e->prefixed) {
        fprintf(f, "    model_map: { \"%s/*\": \"*\" }\n", e->name);
    }
}

void
mf_catalogue_write_providers(FILE *f)
{
    size_t i;

    fprintf(f, "providers:\n");
    for (i = 0; i < mf_catalogue_len; i++) {
        if (i > 0) {
            fputc('\n', f);
        }
        mf_catalogue_write_provider(f, &mf_catalogue[i], NULL, NULL, NULL);
    }
}

/* `A` + `B` of the variable list "A:B". */
static void
table_vars(FILE *f, const char *vars)
{
    const char *p = vars;

    while (*p) {
        size_t n = strcspn(p, ":");

        fprintf(f, "%s`%.*s`", p == vars ? "" : " + ", (int)n, p);
        p += n + (p[n] == ':');
    }
}

/* The variables ${NAME...} that options use, as `NAME`, `NAME`. */
static void
table_option_vars(FILE *f, const char *options)
{
    const char *p = options;
    int first = 1;

    while (p != NULL && (p = strstr(p, "${")) != NULL) {
        size_t n;

        p += 2;
        n = strcspn(p, ":}");
        fprintf(f, "%s`%.*s`", first ? "" : ", ", (int)n, p);
        first = 0;
        p += n;
    }
    if (first) {
        fputc('-', f);
    }
}

void
mf_catalogue_write_table(FILE *f)
{
    size_t i;

    fprintf(f, "| type | provider | plugin | key variable | other variables "
               "| base URL variable, default | models in the default "
               "config |\n"
               "|---|---|---|---|---|---|---|\n");
    for (i = 0; i < mf_catalogue_len; i++) {
        const mf_catalogue_entry_t *e = &mf_catalogue[i];
        const char *p = e->models;

        fprintf(f, "| %s | %s | `%s` | ", e->name, e->title, e->plugin);
        if (e->key_env == NULL) {
            fprintf(f, "none (always enabled)");
        } else {
            table_vars(f, e->key_env);
            if (e->key_env_alt != NULL) {
                fprintf(f, ", or ");
                table_vars(f, e->key_env_alt);
            }
        }
        fprintf(f, " | ");
        table_option_vars(f, e->options);
        fprintf(f, " | `%s`, else %s%s%s%s | ", e->url_env, e->url,
                e->url_about ? " (" : "", e->url_about ? e->url_about : "",
                e->url_about ? ")" : "");
        while (*p) {
            size_t n = strcspn(p, " ");

            fprintf(f, "%s`%.*s`", p == e->models ? "" : ", ", (int)n, p);
            if (e->prefixed && n == strlen(e->name) + 2 &&
                strncmp(p, e->name, n - 2) == 0 &&
                strncmp(p + n - 2, "/*", 2) == 0) {
                fprintf(f, " (prefix stripped)");
            }
            p += n;
            p += strspn(p, " ");
        }
        fprintf(f, " |\n");
    }
}
