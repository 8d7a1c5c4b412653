/*
 * Parallel loops for the kernels: OpenMP, or inside a "pool session" a small pthread pool whose
 * joins never wait for a thread that has not started.
 *
 * Why two: OpenMP (libgomp, the one torch loads) is what torch's own ops run on, so outside a
 * session the kernels share its team and its wait policy. Under OMP_WAIT_POLICY=passive every
 * OpenMP region waits at its end for each thread of the team, also one that is still being woken
 * (tens of microseconds on a VM), so a batch-1 forward of ~100 short regions runs slower on two
 * threads than on one. A session (opened by the Python side around one small forward, with torch on
 * one thread) runs the kernels' loops on the pool instead: the caller starts on the items at once,
 * a worker takes what is left when it arrives, and the loop ends when every item is done, not when
 * every worker has shown up (ONNX Runtime's pool revokes unstarted work the same way). While a
 * session is open the workers wait for the next loop by spinning, so the second core is busy only
 * during that forward.
 */
#ifndef BEBERT_PARALLEL_H
#define BEBERT_PARALLEL_H

#include <stddef.h>

#define BB_MAX_PHASES 4
#define BB_MAX_THREADS 64

/* fn(ctx, phase, item, worker): one item of one phase; worker in [0, threads) names the thread
 * (for per-thread scratch), 0 being the caller. Phases run in order: no item of phase p + 1 starts
 * before every item of phase p has finished. Items of a phase are handed out in chunks of
 * chunk[p] consecutive items (>= 1). */
typedef void (*bb_item_fn)(void *ctx, int phase, size_t item, int worker);
typedef struct bb_phases {
    int n;
    size_t count[BB_MAX_PHASES], chunk[BB_MAX_PHASES];
} bb_phases;

/* Runs every phase's items on up to nt threads (nt <= 1: the caller alone; capped at
 * BB_MAX_THREADS): on the pool inside a session, else in one OpenMP region. */
void bb_par_run(int nt, const bb_phases *ph, bb_item_fn fn, void *ctx);

/* Sessions nest and may overlap across threads: the pool is used while at least one is open.
 * Opening one wakes the workers (the caller's next steps overlap their wake-up); the workers fall
 * asleep again when the last one closes. Without pthreads (or with the pool disabled by
 * BEBERT_POOL=0 at load) opening a session changes nothing. */
void bb_pool_session(int open);
int bb_pool_available(void);

#endif
