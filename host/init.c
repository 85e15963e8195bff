/*
 * `manifold init`: writes a config from the provider catalogue, asking
 * which providers to enable and which key (variable) each uses, or taking
 * the same from --provider NAME --key-env VAR --key KEY --base-url URL.
 * The file is then validated as `manifold -t` would (the caller does).
 */
#include "init.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "core.h"

typedef struct {
    const char *name;    /* provider name and type */
    const char *title;   /* what it is */
    const char *key_env; /* default key variable(s), "A:B" = "${A}:${B}" */
    const char *url_env; /* base URL override variable */
    const char *url;     /* default base URL */
    const char *models;  /* YAML flow list */
    const char *extra;   /* more provider lines, or NULL */
} entry_t;

static const entry_t catalogue[] = {
    {"openai", "OpenAI", "OPENAI_API_KEY", "OPENAI_BASE_URL",
     "https://api.openai.com/v1",
     "[\"gpt-*\", \"o1*\", \"o3*\", \"o4*\", \"chatgpt-*\", "
     "\"text-embedding-*\"]",
     NULL},
    {"anthropic", "Anthropic (Messages API)", "ANTHROPIC_API_KEY",
     "ANTHROPIC_BASE_URL", "https://api.anthropic.com", "[\"claude-*\"]", NULL},
    {"gemini", "Google Gemini (Generative Language API)", "GEMINI_API_KEY",
     "GEMINI_BASE_URL", "https://generativelanguage.googleapis.com",
     "[\"gemini-*\", \"text-embedding-004\"]", NULL},
    {"vertex", "Google Vertex AI (service-account key file)",
     "GOOGLE_APPLICATION_CREDENTIALS", "VERTEX_BASE_URL",
     "https://aiplatform.googleapis.com", "[\"vertex/*\"]",
     "    location: ${VERTEX_LOCATION:-us-central1}\n"
     "    model_map: { \"vertex/*\": \"*\" }\n"},
    {"bedrock", "Amazon Bedrock (SigV4 or a Bedrock API key)",
     "AWS_ACCESS_KEY_ID:AWS_SECRET_ACCESS_KEY", "BEDROCK_BASE_URL",
     "https://bedrock-runtime.amazonaws.com",
     "[\"bedrock/*\", \"anthropic.*\", \"amazon.*\", \"meta.*\", "
     "\"cohere.*\", \"us.*\", \"eu.*\"]",
     "    region: ${AWS_REGION:-us-east-1}\n"
     "    model_map: { \"bedrock/*\": \"*\" }\n"},
    {"azure", "Azure OpenAI (deployments)", "AZURE_OPENAI_API_KEY",
     "AZURE_OPENAI_BASE_URL", "https://your-resource.openai.azure.com",
     "[\"azure/*\"]",
     "    model_map: { \"azure/*\": \"*\" }\n"
     "    api_version: ${AZURE_OPENAI_API_VERSION:-2024-10-21}\n"},
    {"deepseek", "DeepSeek", "DEEPSEEK_API_KEY", "DEEPSEEK_BASE_URL",
     "https://api.deepseek.com/v1", "[\"deepseek-*\"]", NULL},
    {"qwen", "Qwen (DashScope compatible mode)", "DASHSCOPE_API_KEY",
     "DASHSCOPE_BASE_URL", "https://dashscope.aliyuncs.com/compatible-mode/v1",
     "[\"qwen-*\", \"qwq-*\", \"qwen2*\", \"qwen3*\", \"text-embedding-v*\"]",
     NULL},
    {"moonshot", "Moonshot (Kimi)", "MOONSHOT_API_KEY", "MOONSHOT_BASE_URL",
     "https://api.moonshot.cn/v1", "[\"moonshot-*\", \"kimi-*\"]", NULL},
    {"zhipu", "Zhipu (GLM)", "ZHIPU_API_KEY", "ZHIPU_BASE_URL",
     "https://open.bigmodel.cn/api/paas/v4", "[\"glm-*\", \"embedding-*\"]",
     NULL},
    {"doubao", "Doubao (Volcengine Ark)", "ARK_API_KEY", "ARK_BASE_URL",
     "https://ark.cn-beijing.volces.com/api/v3", "[\"doubao-*\", \"ep-*\"]",
     NULL},
    {"hunyuan", "Tencent Hunyuan", "HUNYUAN_API_KEY", "HUNYUAN_BASE_URL",
     "https://api.hunyuan.cloud.tencent.com/v1", "[\"hunyuan-*\"]", NULL},
    {"qianfan", "Baidu Qianfan (v2)", "QIANFAN_API_KEY", "QIANFAN_BASE_URL",
     "https://qianfan.baidubce.com/v2", "[\"ernie-*\", \"ERNIE-*\"]", NULL},
    {"minimax", "MiniMax", "MINIMAX_API_KEY", "MINIMAX_BASE_URL",
     "https://api.minimax.chat/v1", "[\"MiniMax-*\", \"abab*\"]", NULL},
    {"stepfun", "StepFun", "STEPFUN_API_KEY", "STEPFUN_BASE_URL",
     "https://api.stepfun.com/v1", "[\"step-*\"]", NULL},
    {"yi", "01.AI Yi", "YI_API_KEY", "YI_BASE_URL",
     "https://api.lingyiwanwu.com/v1", "[\"yi-*\"]", NULL},
    {"baichuan", "Baichuan", "BAICHUAN_API_KEY", "BAICHUAN_BASE_URL",
     "https://api.baichuan-ai.com/v1", "[\"Baichuan*\", \"baichuan*\"]", NULL},
    {"spark", "iFlytek Spark", "SPARK_API_KEY", "SPARK_BASE_URL",
     "https://spark-api-open.xf-yun.com/v1", "[\"spark/*\"]",
     "    model_map: { \"spark/*\": \"*\" }\n"},
    {"siliconflow", "SiliconFlow", "SILICONFLOW_API_KEY",
     "SILICONFLOW_BASE_URL", "https://api.siliconflow.cn/v1",
     "[\"siliconflow/*\"]", "    model_map: { \"siliconflow/*\": \"*\" }\n"},
    {"groq", "Groq", "GROQ_API_KEY", "GROQ_BASE_URL",
     "https://api.groq.com/openai/v1", "[\"groq/*\"]",
     "    model_map: { \"groq/*\": \"*\" }\n"},
    {"mistral", "Mistral", "MISTRAL_API_KEY", "MISTRAL_BASE_URL",
     "https://api.mistral.ai/v1",
     "[\"mistral-*\", \"codestral-*\", \"ministral-*\", \"pixtral-*\"]", NULL},
    {"together", "Together AI", "TOGETHER_API_KEY", "TOGETHER_BASE_URL",
     "https://api.together.xyz/v1", "[\"together/*\"]",
     "    model_map: { \"together/*\": \"*\" }\n"},
    {"fireworks", "Fireworks AI", "FIREWORKS_API_KEY", "FIREWORKS_BASE_URL",
     "https://api.fireworks.ai/inference/v1", "[\"fireworks/*\"]",
     "    model_map: { \"fireworks/*\": \"*\" }\n"},
    {"openrouter", "OpenRouter", "OPENROUTER_API_KEY", "OPENROUTER_BASE_URL",
     "https://openrouter.ai/api/v1", "[\"openrouter/*\"]",
     "    model_map: { \"openrouter/*\": \"*\" }\n"},
    {"xai", "xAI (Grok)", "XAI_API_KEY", "XAI_BASE_URL", "https://api.x.ai/v1",
     "[\"grok-*\"]", NULL},
    {"perplexity", "Perplexity", "PERPLEXITY_API_KEY", "PERPLEXITY_BASE_URL",
     "https://api.perplexity.ai", "[\"sonar*\"]", NULL},
    {"vllm", "vLLM (OpenAI-compatible server)", "VLLM_API_KEY", "VLLM_BASE_URL",
     "http://127.0.0.1:8000/v1", "[\"vllm/*\"]",
     "    model_map: { \"vllm/*\": \"*\" }\n"},
    {"ollama", "Ollama (local, no key)", NULL, "OLLAMA_BASE_URL",
     "http://127.0.0.1:11434/v1", "[\"ollama/*\"]",
     "    model_map: { \"ollama/*\": \"*\" }\n"},
};

#define NCAT (sizeof(catalogue) / sizeof(catalogue[0]))
#define MAXSEL 64

typedef struct {
    const entry_t *e;
    char *key_env;  /* variable(s), or NULL */
    char *key;      /* a literal key, or NULL */
    char *base_url; /* literal, or NULL for ${URL_ENV:-default} */
} choice_t;

static const entry_t *
find(const char *name)
{
    size_t i;

    for (i = 0; i < NCAT; i++) {
        if (strcmp(catalogue[i].name, name) == 0) {
            return &catalogue[i];
        }
    }
    return NULL;
}

static void
print_catalogue(FILE *f)
{
    size_t i;

    fprintf(f, "  #  %-12s %-46s %s\n", "provider", "", "key variable");
    for (i = 0; i < NCAT; i++) {
        fprintf(f, " %2zu  %-12s %-46s %s\n", i + 1, catalogue[i].name,
                catalogue[i].title,
                catalogue[i].key_env ? catalogue[i].key_env : "(none)");
    }
}

/* A variable name list: NAME or NAME:NAME (upper case, digits, _). */
static int
is_var_list(const char *s)
{
    int start = 1;

    if (*s == '\0') {
        return 0;
    }
    for (; *s; s++) {
        if (*s == ':') {
            if (start) {
                return 0;
            }
            start = 1;
            continue;
        }
        if (!((*s >= 'A' && *s <= 'Z') || *s == '_' ||
              (!start && *s >= '0' && *s <= '9'))) {
            return 0;
        }
        start = 0;
    }
    return !start;
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

static int
write_config(const char *path, const choice_t *c, size_t n, int force)
{
    int literal = 0, fd;
    size_t i;
    FILE *f;

    for (i = 0; i < n; i++) {
        literal |= c[i].key != NULL;
    }
    fd = open(path, O_WRONLY | O_CREAT | (force ? O_TRUNC : O_EXCL),
              literal ? 0600 : 0644);
    if (fd < 0) {
        fprintf(stderr, "manifold init: %s: %s%s\n", path, strerror(errno),
                errno == EEXIST ? " (--force overwrites it)" : "");
        return MF_ERR;
    }
    f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        return MF_ERR;
    }
    fprintf(f,
            "# Written by `manifold init`. Check it with `manifold -t -c %s`.\n"
            "# A provider whose key variable is unset stays disabled; each "
            "base URL\n# can be overridden with its _BASE_URL variable.\n"
            "listen: 127.0.0.1:8080\n"
            "workers: auto\n"
            "log_level: info\n\n"
            "admin:\n"
            "  socket: ${MANIFOLD_ADMIN_SOCKET:-admin.sock}\n\n"
            "reload:\n  watch: true\n  debounce: 200ms\n\n"
            "providers:\n",
            path);
    for (i = 0; i < n; i++) {
        const entry_t *e = c[i].e;

        fprintf(f, "  - name: %s\n    type: %s\n    base_url: ", e->name,
                e->name);
        if (c[i].base_url != NULL) {
            yaml_quote(f, c[i].base_url);
        } else {
            fprintf(f, "${%s:-%s}", e->url_env, e->url);
        }
        fputc('\n', f);
        if (c[i].key != NULL) {
            fprintf(f, "    keys: [");
            yaml_quote(f, c[i].key);
            fprintf(f, "]\n");
        } else if (c[i].key_env != NULL) {
            char *copy = mf_xstrdup(c[i].key_env), *save = NULL, *v;
            int first = 1;

            fprintf(f, "    keys: [\"");
            for (v = strtok_r(copy, ":", &save); v;
                 v = strtok_r(NULL, ":", &save)) {
                fprintf(f, "%s${%s}", first ? "" : ":", v);
                first = 0;
            }
            fprintf(f, "\"]\n");
            free(copy);
        }
        fprintf(f, "    models: %s\n%s\n", e->models, e->extra ? e->extra : "");
    }
    fprintf(f, "stages:\n"
               "  - name: accesslog\n"
               "    plugin: accesslog\n"
               "    config:\n"
               "      path: stdout\n");
    if (fclose(f) != 0) {
        fprintf(stderr, "manifold init: %s: %s\n", path, strerror(errno));
        return MF_ERR;
    }
    return MF_OK;
}

/* One line from stdin without its newline; NULL at end of input. */
static char *
ask(const char *prompt, const char *dflt)
{
    char buf[4096];
    size_t n;

    fprintf(stderr, "%s%s%s%s: ", prompt, dflt ? " [" : "", dflt ? dflt : "",
            dflt ? "]" : "");
    fflush(stderr);
    if (fgets(buf, sizeof(buf), stdin) == NULL) {
        return NULL;
    }
    n = strcspn(buf, "\r\n");
    buf[n] = '\0';
    while (n > 0 && buf[n - 1] == ' ') {
        buf[--n] = '\0';
    }
    return mf_xstrdup(n == 0 && dflt ? dflt : buf + strspn(buf, " "));
}

static int
interactive(choice_t *c, size_t *n)
{
    char *list, *tok, *save = NULL;

    fprintf(stderr, "Providers Manifold can put behind its one API:\n");
    print_catalogue(stderr);
    list =
        ask("\nWhich to enable (numbers or names, comma separated)", "openai");
    if (list == NULL) {
        return MF_ERR;
    }
    for (tok = strtok_r(list, ", ", &save); tok && *n < MAXSEL;
         tok = strtok_r(NULL, ", ", &save)) {
        const entry_t *e = find(tok);
        int num = atoi(tok);

        if (e == NULL && num >= 1 && (size_t)num <= NCAT) {
            e = &catalogue[num - 1];
        }
        if (e == NULL) {
            fprintf(stderr,
                    "manifold init: no provider '%s' in the "
                    "catalogue\n",
                    tok);
            free(list);
            return MF_ERR;
        }
        c[(*n)++].e = e;
    }
    free(list);
    for (size_t i = 0; i < *n; i++) {
        char prompt[256], *k, *u;

        if (c[i].e->key_env != NULL) {
            snprintf(prompt, sizeof(prompt),
                     "Key for %s: a variable name, or the key itself",
                     c[i].e->name);
            if ((k = ask(prompt, c[i].e->key_env)) == NULL) {
                return MF_ERR;
            }
            if (is_var_list(k)) {
                c[i].key_env = k;
            } else {
                c[i].key = k;
                fprintf(stderr, "  (the key is written into the file, "
                                "created 0600)\n");
            }
        }
        snprintf(prompt, sizeof(prompt), "Base URL for %s", c[i].e->name);
        if ((u = ask(prompt, c[i].e->url)) == NULL) {
            return MF_ERR;
        }
        if (strcmp(u, c[i].e->url) == 0) {
            free(u); /* keep ${..._BASE_URL:-default} */
        } else {
            c[i].base_url = u;
        }
    }
    return MF_OK;
}

static void
init_usage(FILE *f)
{
    fprintf(f, "usage: manifold init [-o FILE] [--force] [--provider NAME "
               "[--key-env VAR | --key KEY] [--base-url URL]]...\n"
               "  with no --provider it asks, showing the catalogue:\n");
    print_catalogue(f);
}

int
mf_init_main(int argc, char **argv, const char **out_path)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"force", no_argument, NULL, 'f'},
        {"provider", required_argument, NULL, 'P'},
        {"key-env", required_argument, NULL, 'K'},
        {"key", required_argument, NULL, 'k'},
        {"base-url", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    choice_t c[MAXSEL];
    size_t n = 0, i;
    int opt, force = 0, rc;
    const char *path = "manifold.yaml";

    memset(c, 0, sizeof(c));
    optind = 1;
    while ((opt = getopt_long(argc, argv, "o:fh", opts, NULL)) != -1) {
        switch (opt) {
        case 'o':
            path = optarg;
            break;
        case 'f':
            force = 1;
            break;
        case 'P':
            if (n == MAXSEL || (c[n].e = find(optarg)) == NULL) {
                fprintf(stderr,
                        "manifold init: no provider '%s' in the catalogue:\n",
                        optarg);
                print_catalogue(stderr);
                return 2;
            }
            n++;
            break;
        case 'K':
        case 'k':
        case 'u':
            if (n == 0) {
                fprintf(stderr,
                        "manifold init: --%s belongs after a "
                        "--provider\n",
                        opt == 'K'   ? "key-env"
                        : opt == 'k' ? "key"
                                     : "base-url");
                return 2;
            }
            if (opt == 'K' && !is_var_list(optarg)) {
                fprintf(stderr,
                        "manifold init: --key-env %s: a variable name "
                        "(A_B) or names joined by ':'\n",
                        optarg);
                return 2;
            }
            if (opt == 'u' && strncmp(optarg, "http://", 7) != 0 &&
                strncmp(optarg, "https://", 8) != 0) {
                fprintf(stderr,
                        "manifold init: --base-url %s: must start "
                        "with http:// or https://\n",
                        optarg);
                return 2;
            }
            *(opt == 'K'   ? &c[n - 1].key_env
              : opt == 'k' ? &c[n - 1].key
                           : &c[n - 1].base_url) = mf_xstrdup(optarg);
            break;
        case 'h':
            init_usage(stdout);
            return 0;
        default:
            init_usage(stderr);
            return 2;
        }
    }
    if (n == 0 && interactive(c, &n) != MF_OK) {
        rc = 2;
        goto out;
    }
    for (i = 0; i < n; i++) {
        if (c[i].key == NULL && c[i].key_env == NULL && c[i].e->key_env) {
            c[i].key_env = mf_xstrdup(c[i].e->key_env);
        }
    }
    rc = write_config(path, c, n, force) == MF_OK ? -1 : 1;
    if (rc == -1) {
        fprintf(stderr, "manifold init: wrote %s (%zu provider%s)\n", path, n,
                n == 1 ? "" : "s");
        *out_path = path;
    }
out:
    for (i = 0; i < n; i++) {
        free(c[i].key_env);
        free(c[i].key);
        free(c[i].base_url);
    }
    return rc;
}

void
mf_init_next_steps(const mf_config_t *c, const char *argv0)
{
    size_t i, j, nvars = 0;

    for (i = 0; i < c->nproviders; i++) {
        for (j = 0; j < c->providers[i].nkey_vars; j++) {
            if (nvars++ == 0) {
                printf("\nNext, export the keys of the providers to serve "
                       "(one is enough):\n");
            }
            printf("  export %s=...    # %s\n", c->providers[i].key_vars[j],
                   c->providers[i].name);
        }
    }
    printf("%s the gateway:\n  %s -c %s\n", nvars ? "Then start" : "\nStart",
           argv0, c->path);
}
