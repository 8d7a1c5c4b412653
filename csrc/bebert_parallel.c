/* Parallel loops for the kernels (bebert_parallel.h): OpenMP, or a revocable pthread pool in sessions. */
#define _POSIX_C_SOURCE 200809L
#include "bebert_parallel.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#define BB_POOL 1
#include <pthread.h>
#include <stdatomic.h>
#endif

static size_t cdivz(size_t a, size_t b) { return (a + b - 1) / b; }

static void run_serial(const bb_phases *ph, bb_item_fn fn, void *ctx) {
    for (int p = 0; p < ph->n; p++)
        for (size_t i = 0; i < ph->count[p]; i++) fn(ctx, p, i, 0);
}

static void run_openmp(int nt, const bb_phases *ph, bb_item_fn fn, void *ctx) {
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int w = omp_get_thread_num();
        for (int p = 0; p < ph->n; p++) {
            size_t ch = ph->chunk[p] ? ph->chunk[p] : 1, n = ph->count[p], nc = cdivz(n, ch);
            /* dynamic: a thread preempted by another process does not hold up the loop */
#pragma omp for schedule(dynamic, 1)
            for (size_t c = 0; c < nc; c++) {
                size_t end = (c + 1) * ch < n ? (c + 1) * ch : n;
                for (size_t i = c * ch; i < end; i++) fn(ctx, p, i, w);
            }
        }
    }
#else
    (void)nt;
    run_serial(ph, fn, ctx);
#endif
}

#ifdef BB_POOL
static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* The one job the pool runs at a time (submitters take `g_submit`; a second concurrent submitter
 * runs its loop on OpenMP instead). It lives here, not on the caller's stack, so a worker that read
 * a stale state never touches freed memory: it joins only through a CAS on g_state. */
static struct {
    bb_item_fn fn;
    void *ctx;
    bb_phases ph;
    int nt;
    atomic_size_t next[BB_MAX_PHASES], done[BB_MAX_PHASES];
    atomic_int next_worker;
} g_job;
/* bit 0: the job is open to joiners; bits 1-15: workers inside it; bits 16-63: its generation */
#define ST_OPEN 1u
#define ST_ONE 2u
#define ST_COUNT(s) (((s) >> 1) & 0x7fffu)
#define ST_GEN(s) ((s) >> 16)
static _Atomic uint64_t g_state;
static uint64_t g_gen;              /* written under g_submit */
static atomic_int g_session;        /* open sessions */
static atomic_int g_sleepers;       /* workers blocked on g_wake */
static int g_workers;               /* threads started (under g_submit) */
static int g_enabled = -1;          /* BEBERT_POOL != "0", read once */
static pthread_mutex_t g_submit = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_sleep = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_wake = PTHREAD_COND_INITIALIZER;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void run_items(int w) {
    for (int p = 0; p < g_job.ph.n; p++) {
        size_t n = g_job.ph.count[p], ch = g_job.ph.chunk[p] ? g_job.ph.chunk[p] : 1, i;
        while ((i = atomic_fetch_add(&g_job.next[p], ch)) < n) {
            size_t end = i + ch < n ? i + ch : n;
            for (size_t j = i; j < end; j++) g_job.fn(g_job.ctx, p, j, w);
            atomic_fetch_add(&g_job.done[p], end - i);
        }
        while (atomic_load(&g_job.done[p]) < n) cpu_relax(); /* only items already claimed are left */
    }
}

static int job_waiting(uint64_t last_gen) {
    uint64_t s = atomic_load(&g_state);
    return (s & ST_OPEN) && ST_GEN(s) != last_gen;
}

static void *worker_main(void *arg) {
    (void)arg;
    uint64_t last = 0;
    for (;;) {
        uint64_t s = atomic_load(&g_state);
        if ((s & ST_OPEN) && ST_GEN(s) != last) {
            last = ST_GEN(s);
            int joined = 0;
            while ((s & ST_OPEN) && ST_GEN(s) == last && ST_COUNT(s) < 0x7fffu)
                if ((joined = atomic_compare_exchange_weak(&g_state, &s, s + ST_ONE))) break;
            if (joined) {
                int w = atomic_fetch_add(&g_job.next_worker, 1);
                if (w < g_job.nt) run_items(w);
                atomic_fetch_sub(&g_state, ST_ONE);
            }
            continue;
        }
        if (atomic_load(&g_session) > 0) {
            cpu_relax();
            continue;
        }
        pthread_mutex_lock(&g_sleep);
        atomic_fetch_add(&g_sleepers, 1); /* seq_cst: a submitter that opens a job after this sees us */
        while (atomic_load(&g_session) == 0 && !job_waiting(last)) pthread_cond_wait(&g_wake, &g_sleep);
        atomic_fetch_sub(&g_sleepers, 1);
        pthread_mutex_unlock(&g_sleep);
    }
    return NULL;
}

static void wake_sleepers(void) {
    if (atomic_load(&g_sleepers) > 0) {
        pthread_mutex_lock(&g_sleep);
        pthread_cond_broadcast(&g_wake);
        pthread_mutex_unlock(&g_sleep);
    }
}

/* In a forked child the workers do not exist: start over (the parent's locks may be held by threads
 * that are not in the child, so they are made anew). */
static void after_fork_child(void) {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER, s = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    memcpy(&g_submit, &m, sizeof m);
    memcpy(&g_sleep, &s, sizeof s);
    memcpy(&g_wake, &c, sizeof c);
    atomic_store(&g_state, 0);
    atomic_store(&g_session, 0);
    atomic_store(&g_sleepers, 0);
    g_workers = 0;
}

static void pool_init(void) {
    const char *env = getenv("BEBERT_POOL");
    g_enabled = !(env && env[0] == '0' && env[1] == 0);
    pthread_atfork(NULL, NULL, after_fork_child);
}

/* Starts workers until there are nt - 1 (under g_submit); 0 when not one could be started. */
static int ensure_workers(int nt) {
    while (g_workers < nt - 1) {
        pthread_t t;
        pthread_attr_t a;
        if (pthread_attr_init(&a)) break;
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &a, worker_main, NULL);
        pthread_attr_destroy(&a);
        if (rc) break;
        g_workers++;
    }
    return g_workers > 0;
}

static int run_pool(int nt, const bb_phases *ph, bb_item_fn fn, void *ctx) {
    if (pthread_mutex_trylock(&g_submit)) return 0;
    if (!ensure_workers(nt)) {
        pthread_mutex_unlock(&g_submit);
        return 0;
    }
    g_job.fn = fn;
    g_job.ctx = ctx;
    g_job.ph = *ph;
    g_job.nt = nt;
    for (int p = 0; p < ph->n; p++) {
        atomic_store(&g_job.next[p], 0);
        atomic_store(&g_job.done[p], 0);
    }
    atomic_store(&g_job.next_worker, 1);
    atomic_store(&g_state, (++g_gen << 16) | ST_OPEN); /* no worker inside: the last close waited */
    wake_sleepers();
    run_items(0);
    atomic_fetch_and(&g_state, ~(uint64_t)ST_OPEN); /* revoke: no one joins any more */
    while (ST_COUNT(atomic_load(&g_state))) cpu_relax(); /* those inside finish their claimed items */
    pthread_mutex_unlock(&g_submit);
    return 1;
}

void bb_pool_session(int open) {
    pthread_once(&g_once, pool_init);
    if (!g_enabled) return;
    if (open) {
        atomic_fetch_add(&g_session, 1);
        wake_sleepers();
    } else if (atomic_fetch_sub(&g_session, 1) <= 0) {
        atomic_fetch_add(&g_session, 1); /* unbalanced close (or one from before a fork): stay at 0 */
    }
}

int bb_pool_available(void) {
    pthread_once(&g_once, pool_init);
    return g_enabled;
}
#else
void bb_pool_session(int open) { (void)open; }
int bb_pool_available(void) { return 0; }
#endif

void bb_par_run(int nt, const bb_phases *ph, bb_item_fn fn, void *ctx) {
    if (nt > BB_MAX_THREADS) nt = BB_MAX_THREADS;
    if (nt <= 1) {
        run_serial(ph, fn, ctx);
        return;
    }
#ifdef BB_POOL
    if (atomic_load(&g_session) > 0 && run_pool(nt, ph, fn, ctx)) return;
#endif
    run_openmp(nt, ph, fn, ctx);
}
