/*
 * The response store's file (response_store.db): an SQLite file kept in
 * step with the in-memory store (proto/respstore.c) by a writer thread of
 * its own, and read back at start, so stored Responses answers survive a
 * restart. Workers never touch the file: a change in the memory store
 * only queues its id; the writer commits the queued ids in groups.
 */
#ifndef MF_RESPDB_H
#define MF_RESPDB_H

#include <stddef.h>

/* Opens path (created 0600 when missing, WAL), reads back into the memory
 * store the entries not expired, newest first within max_entries and
 * max_bytes (the rest is deleted from the file), and starts the writer.
 * path NULL: no file (memory only); the store is then started without
 * one. Called once, on the main thread, before the workers start.
 * MF_ERR with a sentence naming the path in err. */
int mf_respdb_open(const char *path, size_t max_entries, size_t max_bytes,
                   char *err, size_t errcap);
/* Writes what is queued, stops the writer and closes the file; the
 * workers must be stopped. Nothing when none is open. */
void mf_respdb_close(void);
/* Whether mf_respdb_open was called (with or without a file), and the
 * path open (NULL: memory only). */
int mf_respdb_started(void);
const char *mf_respdb_path(void);
/* Transactions the writer could not commit since start (each is logged;
 * the next round rewrites the file from memory). */
size_t mf_respdb_failed_rounds(void);
/* For `manifold -t`: MF_OK when path can be opened for writing (an
 * existing SQLite file, or a writable folder to create it in); else
 * MF_ERR with a sentence in err. Creates nothing. */
int mf_respdb_check(const char *path, char *err, size_t errcap);

#endif
