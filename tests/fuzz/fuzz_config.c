/* libFuzzer driver: the YAML config loader and validator. */
#include <stdlib.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *errors = NULL;
    mf_config_t *c;

    mf_log_set_level(MF_LOG_ERROR);
    c = mf_config_parse("fuzz.yaml", (const char *)data, size, "/nonexistent",
                        &errors);
    mf_config_free(c);
    free(errors);
    return 0;
}
