/*
 * The metrics registry: counters, gauges and histograms declared by
 * stages (and the host), with label sets bounded per metric. Each worker
 * thread writes its own shard with plain loads and stores (relaxed
 * atomics, no read-modify-write, no lock); a scrape sums the shards.
 * Metrics live as long as the process, so a reload keeps their values.
 */
#ifndef MF_METRICS_H
#define MF_METRICS_H

#include <manifold/plugin.h>

#include "core/core.h"

/* Shards: one per worker (index = worker id) and one for every other
 * thread, written under a lock. */
#define MF_METRICS_MAX_WORKERS 256

/* Creates the registry; default_max_series for metrics declared without
 * max_series. Call once at start, before any declare. */
void mf_metrics_init(size_t default_max_series);
void mf_metrics_set_default_max_series(size_t n);
void mf_metrics_free(void);

/* Binds the calling thread to worker shard `id` (a worker thread, before
 * its loop runs); -1 unbinds it. */
void mf_metrics_thread_shard(int id);

/* See mf_host_api_t. declare writes why it failed into err. */
mf_metric_t *mf_metric_declare(const mf_metric_def_t *def, char *err,
                               size_t errcap);
int mf_metric_add(mf_metric_t *m, const mf_str_t *values, size_t n,
                  double delta);
int mf_metric_set(mf_metric_t *m, const mf_str_t *values, size_t n,
                  double value);
int mf_metric_observe(mf_metric_t *m, const mf_str_t *values, size_t n,
                      double value, mf_str_t trace_id);
/* ABI 1.6: a series' number once, then writes by number (no lookup). */
int mf_metric_series(mf_metric_t *m, const mf_str_t *values, size_t n);
int mf_metric_add_at(mf_metric_t *m, int series, double delta);
int mf_metric_observe_at(mf_metric_t *m, int series, double value,
                         mf_str_t trace_id);

/* Appends every metric in `format` (MF_METRICS_PROMETHEUS or
 * MF_METRICS_OPENMETRICS, which ends with "# EOF"). */
void mf_metrics_render(mf_buf_t *out, int format);

/* One series' summed value (a counter or gauge; a histogram's count),
 * for tests and the host's own readers; -1 when the series does not
 * exist. */
double mf_metric_value(mf_metric_t *m, const mf_str_t *values, size_t n);
/* Series a metric holds, and series it dropped over its cap. */
size_t mf_metric_nseries(const mf_metric_t *m);
uint64_t mf_metric_dropped(const mf_metric_t *m);

#endif
