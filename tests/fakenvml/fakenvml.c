/*
 * A fake libnvidia-ml.so.1 for tests on machines without a GPU.
 *
 * It exports the NVML entry points that the pynvml binding (nvidia-ml-py 12.560.30 up to 13.x)
 * calls for the data hmonitor reads, with the C header's struct layouts and return codes.  What
 * it reports comes from a text file named by $FAKE_NVML_CONFIG, re-read whenever the file
 * changes, checked at every init call and every nvmlDeviceGetCount* call, so a test can change
 * the GPUs under a running agent.
 *
 * Config format: one "key value" per line; '#' starts a comment line.
 *   init_error N            nvmlInit* returns N (0 = success; 9 = DRIVER_NOT_LOADED)
 *   driver STRING           nvmlSystemGetDriverVersion
 *   cuda N                  nvmlSystemGetCudaDriverVersion(_v2), e.g. 12060 for 12.6
 *   gpu                     starts the next GPU (index 0, 1, ...); the keys below apply to it
 *   name STRING             the rest of the line, spaces allowed
 *   uuid STRING
 *   util N / mem_util N     nvmlDeviceGetUtilizationRates (percent)
 *   temp N                  degrees C
 *   fan N | none            percent, or none = NVML_ERROR_NOT_SUPPORTED (H100/H200 have no fan)
 *   mem TOTAL USED FREE     bytes
 *   lost none|handle|query  handle: GetHandleByIndex fails with GPU_IS_LOST;
 *                           query: the handle works, every query on it fails with GPU_IS_LOST
 *   pci BUSID               nvmlDeviceGetPciInfo_v3's busId, "00000000:19:00.0"
 *   power MW | none         nvmlDeviceGetPowerUsage (milliwatts)
 *   power_limit MW | none   nvmlDeviceGetEnforcedPowerLimit (milliwatts)
 *   sm_clock MHZ | none     nvmlDeviceGetClockInfo(NVML_CLOCK_SM)
 *   mem_clock MHZ | none    nvmlDeviceGetClockInfo(NVML_CLOCK_MEM)
 *   throttle MASK | none    nvmlDeviceGetCurrentClocksEventReasons / ...ThrottleReasons (decimal)
 *   ecc CORR UNCORR | none  nvmlDeviceGetTotalEccErrors (volatile and aggregate alike)
 *   retired SBE DBE | none  nvmlDeviceGetRetiredPages: pages retired for multiple single-bit
 *                           errors and for double-bit errors (pre-Ampere GPUs only)
 *   remapped CORR UNC | none nvmlDeviceGetRemappedRows (Ampere and later)
 *   mig none|off|on         nvmlDeviceGetMigMode; none = NOT_SUPPORTED (a GPU without MIG).
 *                           With MIG on, the whole GPU answers NOT_SUPPORTED for utilization
 *                           and process samples, as the real driver does
 *   mig_parent_procs yes|no with MIG on, whether the whole GPU's handle lists the processes
 *                           (yes: as for root) or answers NO_PERMISSION (no: as for any other
 *                           user; they are then listed per MIG device only).  Default no
 *   mig_instance GI CI PROFILE MEM_TOTAL MEM_USED SM_COUNT
 *                           a MIG device (index 0, 1, ... by order), found by
 *                           nvmlDeviceGetMigDeviceHandleByIndex (up to 7 per GPU, further
 *                           indexes answer NOT_FOUND).  Its name is "<GPU name> MIG <PROFILE>",
 *                           its UUID "MIG-" + GI and CI as two hex digits each + the GPU UUID
 *                           after "GPU-" from its 5th character (tests/fakenvml mig_uuid_for)
 *   proc PID MEM compute|graphics SM|- [GI CI]
 *                           a running process; SM is its SM utilization sample, - for none;
 *                           GI CI: the MIG instance it runs on (entries then carry them)
 * Defaults for a new gpu: an H200 ("NVIDIA H200", UUID and PCI bus id derived from the index
 * as uuid_for/pci_for do), every other value 0 / off, fan none.
 * A missing file makes init fail with DRIVER_NOT_LOADED (no config, no driver); a malformed one
 * makes it fail with UNKNOWN and a message on stderr, so a broken test config is not silent.
 */
#define _POSIX_C_SOURCE 200809L /* strtok_r, st_mtim */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))

/* Return codes, as in nvml.h. */
typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

/* Struct layouts, as in nvml.h; the asserts pin the sizes the binding's ctypes mirrors expect. */
typedef struct nvmlDevice_st { unsigned int index; } *nvmlDevice_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
typedef struct { unsigned int pid; unsigned long long usedGpuMemory; } nvmlProcessInfo_v1_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;
typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;
typedef struct { unsigned int version; int sensorType; int temperature; } nvmlTemperature_t;
typedef struct {
    char busIdLegacy[16]; /* NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE */
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32]; /* NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE */
} nvmlPciInfo_t;
typedef struct {
    unsigned int multiprocessorCount;
    unsigned int sharedCopyEngineCount, sharedDecoderCount, sharedEncoderCount;
    unsigned int sharedJpegCount, sharedOfaCount;
    unsigned int gpuInstanceSliceCount, computeInstanceSliceCount;
    unsigned long long memorySizeMB;
} nvmlDeviceAttributes_t;

_Static_assert(sizeof(nvmlProcessInfo_v1_t) == 16, "v1 process entry is 16 bytes");
_Static_assert(sizeof(nvmlProcessInfo_t) == 24, "v2/v3 process entry is 24 bytes");
_Static_assert(sizeof(nvmlProcessUtilizationSample_t) == 32, "utilization sample is 32 bytes");
_Static_assert(sizeof(nvmlMemory_v2_t) == 40, "nvmlMemory_v2_t is 40 bytes");
_Static_assert(sizeof(nvmlPciInfo_t) == 68, "nvmlPciInfo_t (v3) is 68 bytes");
_Static_assert(sizeof(nvmlDeviceAttributes_t) == 40, "nvmlDeviceAttributes_t is 40 bytes");

/* Versioned structs carry (version << 24) | sizeof in their first field. */
#define STRUCT_VERSION(type, ver) ((unsigned int)(sizeof(type) | ((ver) << 24)))
#define NVML_TEMPERATURE_GPU 0
#define NVML_CLOCK_GRAPHICS 0
#define NVML_CLOCK_SM 1
#define NVML_CLOCK_MEM 2
#define NO_INSTANCE 0xFFFFFFFFu /* GPU/compute instance id of a process when MIG is off */

#define MAX_GPUS 64
#define MAX_PROCS 128
#define TEXT_LEN 96 /* NVML_DEVICE_NAME_V2_BUFFER_SIZE and _UUID_V2_ */
#define MAX_MIG 7      /* MIG devices on one H100/H200 */
#define PROFILE_LEN 32

enum lost_mode { LOST_NONE, LOST_HANDLE, LOST_QUERY };

struct fake_proc {
    unsigned int pid;
    unsigned long long mem;
    int graphics;
    int sm;              /* -1: no utilization sample */
    unsigned int gi, ci; /* NO_INSTANCE: not on a MIG instance */
};

/* A value the GPU may not support: `has` 0 answers NOT_SUPPORTED. */
struct opt {
    int has;
    unsigned long long v[2];
};

struct fake_mig {
    unsigned int gi, ci, sm_count;
    char profile[PROFILE_LEN];
    unsigned long long total, used;
};

enum mig_mode { MIG_NONE = -1, MIG_OFF = 0, MIG_ON = 1 };

struct fake_gpu {
    char name[TEXT_LEN], uuid[TEXT_LEN], pci[32];
    unsigned int util, mem_util, temp;
    int fan; /* -1: not supported */
    unsigned long long total, used, free;
    enum lost_mode lost;
    struct opt power, power_limit, sm_clock, mem_clock, throttle, ecc, retired, remapped;
    enum mig_mode mig;
    int mig_parent_procs;
    int nmig;
    struct fake_mig migs[MAX_MIG];
    int nprocs;
    struct fake_proc procs[MAX_PROCS];
};

struct fake_config {
    int init_error;
    char driver[80];
    unsigned int cuda;
    int ngpus;
    struct fake_gpu gpus[MAX_GPUS];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct fake_config cfg, staging; /* staging: parsed here first, so a bad file changes nothing */
static struct stat cfg_stat;            /* of the file cfg was read from */
static int cfg_loaded;
static int init_count; /* nvmlInit/nvmlShutdown nest, as in the real library */
static struct nvmlDevice_st handles[MAX_GPUS];
static struct nvmlDevice_st mig_handles[MAX_GPUS * MAX_MIG]; /* GPU i's MIG device k: i*MAX_MIG+k */

/* Every entry point holds the lock for its whole body: ctypes drops the GIL around the call. */
static void unlock_cb(pthread_mutex_t **m) { pthread_mutex_unlock(*m); }
#define LOCKED                                                                        \
    pthread_mutex_t *held_ __attribute__((cleanup(unlock_cb), unused)) = &lock; \
    pthread_mutex_lock(&lock)

/* ---- config parsing ---- */

static int parse_error(const char *path, int line, const char *what) {
    fprintf(stderr, "fakenvml: %s:%d: %s\n", path, line, what);
    return NVML_ERROR_UNKNOWN;
}

/* Parses a whole unsigned decimal number; 0 on success. */
static int parse_ull(const char *s, unsigned long long *out) {
    char *end;
    if (*s < '0' || *s > '9') return -1;
    *out = strtoull(s, &end, 10);
    return *end == '\0' ? 0 : -1;
}

static int parse_uint(const char *s, unsigned int *out) {
    unsigned long long v;
    if (parse_ull(s, &v) != 0 || v > 0xFFFFFFFFull) return -1;
    *out = (unsigned int)v;
    return 0;
}

static int copy_text(char *dst, size_t size, const char *src) {
    if (strlen(src) >= size) return -1;
    strcpy(dst, src);
    return 0;
}

/* Splits `s` at blanks into exactly `n` fields; 0 on success. */
static int split(char *s, char **fields, int n) {
    char *save = NULL;
    int got = 0;
    for (char *t = strtok_r(s, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (got == n) return -1;
        fields[got++] = t;
    }
    return got == n ? 0 : -1;
}

/* "mem TOTAL USED FREE" */
static int parse_mem(char *rest, struct fake_gpu *g) {
    char *f[3];
    if (split(rest, f, 3) != 0) return -1;
    if (parse_ull(f[0], &g->total) || parse_ull(f[1], &g->used) || parse_ull(f[2], &g->free))
        return -1;
    return 0;
}

/* "proc PID MEM KIND SM [GI CI]" */
static int parse_proc(char *rest, struct fake_gpu *g) {
    char *f[6];
    struct fake_proc *p = &g->procs[g->nprocs];
    unsigned int sm;
    char copy[512];
    if (g->nprocs == MAX_PROCS || copy_text(copy, sizeof copy, rest) != 0) return -1;
    p->gi = p->ci = NO_INSTANCE;
    if (split(copy, f, 6) == 0) {
        if (parse_uint(f[4], &p->gi) != 0 || parse_uint(f[5], &p->ci) != 0) return -1;
    } else if (split(rest, f, 4) != 0) {
        return -1;
    }
    if (parse_uint(f[0], &p->pid) != 0 || parse_ull(f[1], &p->mem) != 0) return -1;
    if (strcmp(f[2], "compute") == 0) p->graphics = 0;
    else if (strcmp(f[2], "graphics") == 0) p->graphics = 1;
    else return -1;
    if (strcmp(f[3], "-") == 0) p->sm = -1;
    else if (parse_uint(f[3], &sm) == 0 && sm <= 100) p->sm = (int)sm;
    else return -1;
    g->nprocs++;
    return 0;
}

/* "KEY none" or exactly `n` numbers. */
static int parse_opt(char *rest, struct opt *o, int n) {
    char *f[2];
    if (strcmp(rest, "none") == 0) {
        memset(o, 0, sizeof *o);
        return 0;
    }
    if (split(rest, f, n) != 0) return -1;
    for (int i = 0; i < n; i++)
        if (parse_ull(f[i], &o->v[i]) != 0) return -1;
    o->has = 1;
    return 0;
}

/* An optional value that NVML hands out as an unsigned int. */
static int parse_opt_uint(char *rest, struct opt *o, int n) {
    if (parse_opt(rest, o, n) != 0) return -1;
    for (int i = 0; i < n && o->has; i++)
        if (o->v[i] > 0xFFFFFFFFull) return -1;
    return 0;
}

/* "mig_instance GI CI PROFILE MEM_TOTAL MEM_USED SM_COUNT" */
static int parse_mig(char *rest, struct fake_gpu *g) {
    char *f[6];
    struct fake_mig *m = &g->migs[g->nmig];
    if (g->nmig == MAX_MIG || split(rest, f, 6) != 0) return -1;
    if (parse_uint(f[0], &m->gi) || parse_uint(f[1], &m->ci) ||
        copy_text(m->profile, sizeof m->profile, f[2]) || parse_ull(f[3], &m->total) ||
        parse_ull(f[4], &m->used) || parse_uint(f[5], &m->sm_count) || m->used > m->total)
        return -1;
    g->nmig++;
    return 0;
}

/* One "key value" line into staging; 0 on success. */
static int parse_line(char *key, char *rest, struct fake_config *c) {
    struct fake_gpu *g = c->ngpus > 0 ? &c->gpus[c->ngpus - 1] : NULL;
    unsigned int v;
    if (strcmp(key, "init_error") == 0) {
        if (parse_uint(rest, &v) != 0) return -1;
        c->init_error = (int)v;
        return 0;
    }
    if (strcmp(key, "driver") == 0) return copy_text(c->driver, sizeof c->driver, rest);
    if (strcmp(key, "cuda") == 0) return parse_uint(rest, &c->cuda);
    if (strcmp(key, "gpu") == 0) {
        if (*rest || c->ngpus == MAX_GPUS) return -1;
        g = &c->gpus[c->ngpus];
        memset(g, 0, sizeof *g);
        g->fan = -1;
        g->mig = MIG_OFF;
        snprintf(g->name, sizeof g->name, "NVIDIA H200");
        snprintf(g->uuid, sizeof g->uuid, "GPU-00000000-0000-0000-0000-%012x", (unsigned int)c->ngpus);
        snprintf(g->pci, sizeof g->pci, "00000000:%02X:00.0", 0x18u + (unsigned int)c->ngpus);
        c->ngpus++;
        return 0;
    }
    if (!g) return -1; /* every other key belongs to a gpu */
    if (strcmp(key, "name") == 0) return copy_text(g->name, sizeof g->name, rest);
    if (strcmp(key, "uuid") == 0) return copy_text(g->uuid, sizeof g->uuid, rest);
    if (strcmp(key, "util") == 0) return parse_uint(rest, &g->util);
    if (strcmp(key, "mem_util") == 0) return parse_uint(rest, &g->mem_util);
    if (strcmp(key, "temp") == 0) return parse_uint(rest, &g->temp);
    if (strcmp(key, "fan") == 0) {
        if (strcmp(rest, "none") == 0) g->fan = -1;
        else if (parse_uint(rest, &v) == 0 && v <= 100) g->fan = (int)v;
        else return -1;
        return 0;
    }
    if (strcmp(key, "mem") == 0) return parse_mem(rest, g);
    if (strcmp(key, "lost") == 0) {
        if (strcmp(rest, "none") == 0) g->lost = LOST_NONE;
        else if (strcmp(rest, "handle") == 0) g->lost = LOST_HANDLE;
        else if (strcmp(rest, "query") == 0) g->lost = LOST_QUERY;
        else return -1;
        return 0;
    }
    if (strcmp(key, "pci") == 0) return copy_text(g->pci, sizeof g->pci, rest);
    if (strcmp(key, "power") == 0) return parse_opt_uint(rest, &g->power, 1);
    if (strcmp(key, "power_limit") == 0) return parse_opt_uint(rest, &g->power_limit, 1);
    if (strcmp(key, "sm_clock") == 0) return parse_opt_uint(rest, &g->sm_clock, 1);
    if (strcmp(key, "mem_clock") == 0) return parse_opt_uint(rest, &g->mem_clock, 1);
    if (strcmp(key, "throttle") == 0) return parse_opt(rest, &g->throttle, 1);
    if (strcmp(key, "ecc") == 0) return parse_opt(rest, &g->ecc, 2);
    if (strcmp(key, "retired") == 0) return parse_opt_uint(rest, &g->retired, 2);
    if (strcmp(key, "remapped") == 0) return parse_opt_uint(rest, &g->remapped, 2);
    if (strcmp(key, "mig") == 0) {
        if (strcmp(rest, "none") == 0) g->mig = MIG_NONE;
        else if (strcmp(rest, "off") == 0) g->mig = MIG_OFF;
        else if (strcmp(rest, "on") == 0) g->mig = MIG_ON;
        else return -1;
        return 0;
    }
    if (strcmp(key, "mig_parent_procs") == 0) {
        if (strcmp(rest, "yes") == 0) g->mig_parent_procs = 1;
        else if (strcmp(rest, "no") == 0) g->mig_parent_procs = 0;
        else return -1;
        return 0;
    }
    if (strcmp(key, "mig_instance") == 0) return parse_mig(rest, g);
    if (strcmp(key, "proc") == 0) return parse_proc(rest, g);
    return -1;
}

static int parse_file(FILE *f, const char *path, struct fake_config *c) {
    char buf[512];
    int lineno = 0;
    memset(c, 0, sizeof *c);
    snprintf(c->driver, sizeof c->driver, "560.35.03");
    c->cuda = 12060;
    while (fgets(buf, sizeof buf, f)) {
        char *key = buf, *rest, *end;
        lineno++;
        if (!strchr(buf, '\n') && !feof(f)) return parse_error(path, lineno, "line too long");
        end = buf + strcspn(buf, "\r\n");
        while (end > buf && (end[-1] == ' ' || end[-1] == '\t')) end--;
        *end = '\0';
        while (*key == ' ' || *key == '\t') key++;
        if (*key == '\0' || *key == '#') continue;
        rest = key + strcspn(key, " \t");
        if (*rest) *rest++ = '\0';
        while (*rest == ' ' || *rest == '\t') rest++;
        if (parse_line(key, rest, c) != 0) return parse_error(path, lineno, "bad line");
    }
    return NVML_SUCCESS;
}

/* Re-reads the config if the file changed since it was read.  os.replace gives a new inode, and
 * the writer bumps the mtime in nanoseconds, so either tells a rewrite apart. */
static nvmlReturn_t reload(void) {
    const char *path = getenv("FAKE_NVML_CONFIG");
    struct stat st;
    FILE *f;
    nvmlReturn_t rc;
    if (!path || !*path || stat(path, &st) != 0) return NVML_ERROR_DRIVER_NOT_LOADED;
    if (cfg_loaded && st.st_ino == cfg_stat.st_ino && st.st_dev == cfg_stat.st_dev &&
        st.st_size == cfg_stat.st_size && st.st_mtim.tv_sec == cfg_stat.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == cfg_stat.st_mtim.tv_nsec)
        return NVML_SUCCESS;
    f = fopen(path, "r");
    if (!f) return NVML_ERROR_DRIVER_NOT_LOADED;
    rc = parse_file(f, path, &staging);
    fclose(f);
    if (rc != NVML_SUCCESS) return rc;
    cfg = staging;
    cfg_stat = st;
    cfg_loaded = 1;
    return NVML_SUCCESS;
}

/* ---- init and errors ---- */

static nvmlReturn_t do_init(void) {
    nvmlReturn_t rc = reload();
    if (rc != NVML_SUCCESS) return rc;
    if (cfg.init_error != 0) return cfg.init_error;
    init_count++;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    LOCKED;
    (void)flags;
    return do_init();
}

EXPORT nvmlReturn_t nvmlInit_v2(void) {
    LOCKED;
    return do_init();
}

EXPORT nvmlReturn_t nvmlInit(void) {
    LOCKED;
    return do_init();
}

EXPORT nvmlReturn_t nvmlShutdown(void) {
    LOCKED;
    if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
    init_count--;
    return NVML_SUCCESS;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    default: return "Unknown Error";
    }
}

/* ---- system ---- */

static nvmlReturn_t copy_out(char *dst, unsigned int length, const char *src) {
    if (!dst) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(dst, src);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    LOCKED;
    if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
    return copy_out(version, length, cfg.driver);
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    char text[96];
    LOCKED;
    if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
    snprintf(text, sizeof text, "12.%s", cfg.driver); /* the real one is "<cuda major>.<driver>" */
    return copy_out(version, length, text);
}

static nvmlReturn_t cuda_version(int *version) {
    if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
    if (!version) return NVML_ERROR_INVALID_ARGUMENT;
    *version = (int)cfg.cuda;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version) {
    LOCKED;
    return cuda_version(version);
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) {
    LOCKED;
    return cuda_version(version);
}

static nvmlReturn_t get_count(unsigned int *count) {
    nvmlReturn_t rc;
    if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    rc = reload();
    /* A vanished file keeps the last config: the driver does not go away under a running
     * process.  A malformed one is reported, so the test that wrote it fails loudly. */
    if (rc != NVML_SUCCESS && rc != NVML_ERROR_DRIVER_NOT_LOADED) return rc;
    *count = (unsigned int)cfg.ngpus;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    LOCKED;
    return get_count(count);
}

EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) {
    LOCKED;
    return get_count(count);
}

/* ---- handles ---- */

static nvmlReturn_t handle_by_index(unsigned int index, nvmlDevice_t *device) {
    if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
    if (!device || index >= (unsigned int)cfg.ngpus) return NVML_ERROR_INVALID_ARGUMENT;
    if (cfg.gpus[index].lost == LOST_HANDLE) return NVML_ERROR_GPU_IS_LOST;
    handles[index].index = index;
    *device = &handles[index];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    LOCKED;
    return handle_by_index(index, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    LOCKED;
    return handle_by_index(index, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    LOCKED;
    if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
    if (!uuid || !device) return NVML_ERROR_INVALID_ARGUMENT;
    for (int i = 0; i < cfg.ngpus; i++)
        if (strcmp(cfg.gpus[i].uuid, uuid) == 0) return handle_by_index((unsigned int)i, device);
    return NVML_ERROR_NOT_FOUND;
}

/* The GPU behind a handle, or why there is none.  A handle stays a pointer into `handles`; a
 * config that later drops its GPU makes it invalid rather than dangling. */
static nvmlReturn_t lookup(nvmlDevice_t device, struct fake_gpu **out) {
    if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
    if (!device || device < handles || device >= handles + MAX_GPUS ||
        device - handles >= cfg.ngpus)
        return NVML_ERROR_INVALID_ARGUMENT;
    *out = &cfg.gpus[device - handles];
    return (*out)->lost == LOST_NONE ? NVML_SUCCESS : NVML_ERROR_GPU_IS_LOST;
}

/* Declares `g` and returns early unless the handle names a live GPU. */
#define DEVICE(device)                       \
    struct fake_gpu *g;                      \
    nvmlReturn_t rc_ = lookup(device, &g);   \
    if (rc_ != NVML_SUCCESS) return rc_

/* A whole GPU (*m NULL) or one of its MIG devices.  A MIG handle whose device is gone (MIG
 * turned off, fewer instances configured) is invalid, as the real one is once destroyed. */
static nvmlReturn_t lookup_any(nvmlDevice_t device, struct fake_gpu **g, struct fake_mig **m) {
    uintptr_t at = (uintptr_t)device, first = (uintptr_t)mig_handles;
    *m = NULL;
    if (at >= first && at < (uintptr_t)(mig_handles + MAX_GPUS * MAX_MIG)) {
        size_t k = (size_t)(device - mig_handles);
        nvmlReturn_t rc;
        if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
        if (k / MAX_MIG >= (size_t)cfg.ngpus) return NVML_ERROR_INVALID_ARGUMENT;
        rc = lookup(&handles[k / MAX_MIG], g);
        if (rc != NVML_SUCCESS) return rc;
        if ((*g)->mig != MIG_ON || k % MAX_MIG >= (size_t)(*g)->nmig)
            return NVML_ERROR_INVALID_ARGUMENT;
        *m = &(*g)->migs[k % MAX_MIG];
        return NVML_SUCCESS;
    }
    return lookup(device, g);
}

/* Declares `g` and `m` (NULL for a whole GPU), as DEVICE, for getters MIG devices answer too. */
#define ANY_DEVICE(device)                       \
    struct fake_gpu *g;                          \
    struct fake_mig *m;                          \
    nvmlReturn_t rc_ = lookup_any(device, &g, &m); \
    if (rc_ != NVML_SUCCESS) return rc_

/* "MIG-" + GI and CI as two hex digits each + the GPU UUID after "GPU-" from its 5th character:
 * the same shape as the real ones, unique per GPU and instance. */
static void mig_uuid(const struct fake_gpu *g, const struct fake_mig *m, char *out, size_t n) {
    const char *body = strncmp(g->uuid, "GPU-", 4) == 0 ? g->uuid + 4 : g->uuid;
    snprintf(out, n, "MIG-%02x%02x%s", m->gi & 0xFFu, m->ci & 0xFFu,
             strlen(body) > 4 ? body + 4 : "");
}

/* ---- per-device getters ---- */

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    LOCKED;
    DEVICE(device);
    if (!index) return NVML_ERROR_INVALID_ARGUMENT;
    *index = (unsigned int)(g - cfg.gpus);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    char text[TEXT_LEN + PROFILE_LEN + 8];
    LOCKED;
    ANY_DEVICE(device);
    if (!m) return copy_out(name, length, g->name);
    snprintf(text, sizeof text, "%s MIG %s", g->name, m->profile);
    return copy_out(name, length, text);
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    char text[TEXT_LEN + 8];
    LOCKED;
    ANY_DEVICE(device);
    if (!m) return copy_out(uuid, length, g->uuid);
    mig_uuid(g, m, text, sizeof text);
    return copy_out(uuid, length, text);
}

/* Neither a MIG device nor a GPU in MIG mode reports utilization. */
EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *u) {
    LOCKED;
    ANY_DEVICE(device);
    if (!u) return NVML_ERROR_INVALID_ARGUMENT;
    if (m || g->mig == MIG_ON) return NVML_ERROR_NOT_SUPPORTED;
    u->gpu = g->util;
    u->memory = g->mem_util;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned int *temp) {
    LOCKED;
    DEVICE(device);
    if (sensor != NVML_TEMPERATURE_GPU || !temp) return NVML_ERROR_INVALID_ARGUMENT;
    *temp = g->temp;
    return NVML_SUCCESS;
}

/* Newer bindings (13.x) also offer this versioned form. */
EXPORT nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t device, nvmlTemperature_t *temp) {
    LOCKED;
    DEVICE(device);
    if (!temp) return NVML_ERROR_INVALID_ARGUMENT;
    if (temp->version != STRUCT_VERSION(nvmlTemperature_t, 1))
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (temp->sensorType != NVML_TEMPERATURE_GPU) return NVML_ERROR_INVALID_ARGUMENT;
    temp->temperature = (int)g->temp;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t device, unsigned int *speed) {
    LOCKED;
    DEVICE(device);
    if (!speed) return NVML_ERROR_INVALID_ARGUMENT;
    if (g->fan < 0) return NVML_ERROR_NOT_SUPPORTED;
    *speed = (unsigned int)g->fan;
    return NVML_SUCCESS;
}

/* Memory the driver keeps for itself: whatever total has beyond used + free. */
static unsigned long long reserved_of(const struct fake_gpu *g) {
    return g->total > g->used + g->free ? g->total - g->used - g->free : 0;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    LOCKED;
    ANY_DEVICE(device);
    if (!memory) return NVML_ERROR_INVALID_ARGUMENT;
    if (m) {
        memory->total = m->total;
        memory->used = m->used;
        memory->free = m->total - m->used;
        return NVML_SUCCESS;
    }
    memory->total = g->total;
    memory->free = g->free;
    memory->used = g->used + reserved_of(g); /* v1 counts the reserved part as used */
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    LOCKED;
    ANY_DEVICE(device);
    if (!memory) return NVML_ERROR_INVALID_ARGUMENT;
    if (memory->version != STRUCT_VERSION(nvmlMemory_v2_t, 2))
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (m) {
        memory->total = m->total;
        memory->reserved = 0;
        memory->used = m->used;
        memory->free = m->total - m->used;
        return NVML_SUCCESS;
    }
    memory->total = g->total;
    memory->reserved = reserved_of(g);
    memory->free = g->free;
    memory->used = g->used;
    return NVML_SUCCESS;
}

/* ---- lists: two-phase, the caller first asks with no buffer to learn the count ---- */

/* Whether a process is listed for this device: a MIG device lists those on its instance. */
static int listed(const struct fake_proc *p, const struct fake_mig *m, int graphics) {
    return p->graphics == graphics && (!m || (p->gi == m->gi && p->ci == m->ci));
}

/* Running processes of one kind; `v1` selects the old 16-byte entry, else the 24-byte one.  In
 * MIG mode the whole GPU lists them only for a privileged caller (mig_parent_procs). */
static nvmlReturn_t running(nvmlDevice_t device, int graphics, unsigned int *count, void *infos,
                            int v1) {
    unsigned int n = 0, k = 0;
    ANY_DEVICE(device);
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    if (!m && g->mig == MIG_ON && !g->mig_parent_procs) return NVML_ERROR_NO_PERMISSION;
    for (int i = 0; i < g->nprocs; i++) n += listed(&g->procs[i], m, graphics);
    if (*count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    if (n > 0 && !infos) return NVML_ERROR_INVALID_ARGUMENT;
    for (int i = 0; i < g->nprocs; i++) {
        const struct fake_proc *p = &g->procs[i];
        if (!listed(p, m, graphics)) continue;
        if (v1) {
            nvmlProcessInfo_v1_t *e = (nvmlProcessInfo_v1_t *)infos + k++;
            e->pid = p->pid;
            e->usedGpuMemory = p->mem;
        } else {
            nvmlProcessInfo_t *e = (nvmlProcessInfo_t *)infos + k++;
            e->pid = p->pid;
            e->usedGpuMemory = p->mem;
            e->gpuInstanceId = p->gi;
            e->computeInstanceId = p->ci;
        }
    }
    *count = n;
    return NVML_SUCCESS;
}

#define RUNNING(fn, graphics, type, v1)                                               \
    EXPORT nvmlReturn_t fn(nvmlDevice_t device, unsigned int *count, type *infos) {   \
        LOCKED;                                                                       \
        return running(device, graphics, count, infos, v1);                           \
    }
RUNNING(nvmlDeviceGetComputeRunningProcesses_v3, 0, nvmlProcessInfo_t, 0)
RUNNING(nvmlDeviceGetComputeRunningProcesses_v2, 0, nvmlProcessInfo_t, 0)
RUNNING(nvmlDeviceGetComputeRunningProcesses, 0, nvmlProcessInfo_v1_t, 1)
RUNNING(nvmlDeviceGetGraphicsRunningProcesses_v3, 1, nvmlProcessInfo_t, 0)
RUNNING(nvmlDeviceGetGraphicsRunningProcesses_v2, 1, nvmlProcessInfo_t, 0)
RUNNING(nvmlDeviceGetGraphicsRunningProcesses, 1, nvmlProcessInfo_v1_t, 1)

/* Samples newer than lastSeenTimeStamp (microseconds since the epoch).  Every configured sample
 * is stamped "now", so a caller passing 0 or a past time sees them all; none at all is
 * NOT_FOUND, as the real library answers when no process ran in the window. */
EXPORT nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device,
                                                    nvmlProcessUtilizationSample_t *utilization,
                                                    unsigned int *count,
                                                    unsigned long long lastSeenTimeStamp) {
    struct timespec ts;
    unsigned long long now;
    unsigned int n = 0, k = 0;
    LOCKED;
    ANY_DEVICE(device);
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    if (m || g->mig == MIG_ON) return NVML_ERROR_NOT_SUPPORTED;
    clock_gettime(CLOCK_REALTIME, &ts);
    now = (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000ull;
    for (int i = 0; i < g->nprocs; i++) n += g->procs[i].sm >= 0;
    if (n == 0 || lastSeenTimeStamp >= now) return NVML_ERROR_NOT_FOUND;
    if (!utilization || *count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (int i = 0; i < g->nprocs; i++) {
        const struct fake_proc *p = &g->procs[i];
        if (p->sm < 0) continue;
        utilization[k].pid = p->pid;
        utilization[k].timeStamp = now;
        utilization[k].smUtil = (unsigned int)p->sm;
        utilization[k].memUtil = 0;
        utilization[k].encUtil = 0;
        utilization[k].decUtil = 0;
        k++;
    }
    *count = n;
    return NVML_SUCCESS;
}

/* ---- PCI, power, clocks, throttling, memory errors ---- */

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    unsigned int domain = 0, bus = 0, dev = 0;
    LOCKED;
    DEVICE(device);
    if (!pci) return NVML_ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof *pci);
    if (sscanf(g->pci, "%x:%x:%x", &domain, &bus, &dev) != 3) domain = bus = dev = 0;
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04x:%02x:%02x.0", domain & 0xFFFFu,
             bus & 0xFFu, dev & 0xFFu);
    snprintf(pci->busId, sizeof pci->busId, "%s", g->pci);
    pci->domain = domain;
    pci->bus = bus;
    pci->device = dev;
    pci->pciDeviceId = 0x233510DEu; /* H200 SXM, vendor 10DE */
    pci->pciSubSystemId = 0x18B010DEu;
    return NVML_SUCCESS;
}

/* An optional unsigned int value of the GPU. */
static nvmlReturn_t opt_uint(nvmlDevice_t device, size_t field, unsigned int *out) {
    DEVICE(device);
    const struct opt *o = (const struct opt *)((const char *)g + field);
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    if (!o->has) return NVML_ERROR_NOT_SUPPORTED;
    *out = (unsigned int)o->v[0];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    LOCKED;
    return opt_uint(device, offsetof(struct fake_gpu, power), power);
}

EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit) {
    LOCKED;
    return opt_uint(device, offsetof(struct fake_gpu, power_limit), limit);
}

EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, int type, unsigned int *clock) {
    LOCKED;
    if (type == NVML_CLOCK_GRAPHICS || type == NVML_CLOCK_SM)
        return opt_uint(device, offsetof(struct fake_gpu, sm_clock), clock);
    if (type == NVML_CLOCK_MEM) return opt_uint(device, offsetof(struct fake_gpu, mem_clock), clock);
    return NVML_ERROR_INVALID_ARGUMENT;
}

static nvmlReturn_t clock_reasons(nvmlDevice_t device, unsigned long long *reasons) {
    DEVICE(device);
    if (!reasons) return NVML_ERROR_INVALID_ARGUMENT;
    if (!g->throttle.has) return NVML_ERROR_NOT_SUPPORTED;
    *reasons = g->throttle.v[0];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device,
                                                           unsigned long long *reasons) {
    LOCKED;
    return clock_reasons(device, reasons);
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device,
                                                              unsigned long long *reasons) {
    LOCKED;
    return clock_reasons(device, reasons);
}

/* errorType 0 corrected / 1 uncorrected; counterType 0 volatile / 1 aggregate (the same here). */
EXPORT nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, int errorType,
                                                int counterType, unsigned long long *count) {
    LOCKED;
    DEVICE(device);
    if (!count || errorType < 0 || errorType > 1 || counterType < 0 || counterType > 1)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!g->ecc.has) return NVML_ERROR_NOT_SUPPORTED;
    *count = g->ecc.v[errorType];
    return NVML_SUCCESS;
}

/* cause 0: multiple single-bit errors, 1: a double-bit error.  Two-phase like the lists. */
EXPORT nvmlReturn_t nvmlDeviceGetRetiredPages(nvmlDevice_t device, int cause,
                                              unsigned int *pageCount,
                                              unsigned long long *addresses) {
    unsigned int n;
    LOCKED;
    DEVICE(device);
    if (!pageCount || cause < 0 || cause > 1) return NVML_ERROR_INVALID_ARGUMENT;
    if (!g->retired.has) return NVML_ERROR_NOT_SUPPORTED;
    n = (unsigned int)g->retired.v[cause];
    if (*pageCount < n) {
        *pageCount = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    if (n > 0 && !addresses) return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned int i = 0; i < n; i++)
        addresses[i] = ((unsigned long long)cause << 32) + 0x1000ull * (i + 1);
    *pageCount = n;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t device, unsigned int *corrRows,
                                              unsigned int *uncRows, unsigned int *isPending,
                                              unsigned int *failureOccurred) {
    LOCKED;
    DEVICE(device);
    if (!corrRows || !uncRows || !isPending || !failureOccurred)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!g->remapped.has) return NVML_ERROR_NOT_SUPPORTED;
    *corrRows = (unsigned int)g->remapped.v[0];
    *uncRows = (unsigned int)g->remapped.v[1];
    *isPending = 0;
    *failureOccurred = 0;
    return NVML_SUCCESS;
}

/* ---- MIG ---- */

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode,
                                         unsigned int *pendingMode) {
    LOCKED;
    DEVICE(device);
    if (!currentMode || !pendingMode) return NVML_ERROR_INVALID_ARGUMENT;
    if (g->mig == MIG_NONE) return NVML_ERROR_NOT_SUPPORTED;
    *currentMode = *pendingMode = g->mig == MIG_ON;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count) {
    LOCKED;
    DEVICE(device);
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    if (g->mig == MIG_NONE) return NVML_ERROR_NOT_SUPPORTED;
    *count = MAX_MIG;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                        nvmlDevice_t *migDevice) {
    LOCKED;
    DEVICE(device);
    if (!migDevice) return NVML_ERROR_INVALID_ARGUMENT;
    if (g->mig == MIG_NONE) return NVML_ERROR_NOT_SUPPORTED;
    if (g->mig != MIG_ON || index >= (unsigned int)g->nmig) return NVML_ERROR_NOT_FOUND;
    *migDevice = &mig_handles[(size_t)(g - cfg.gpus) * MAX_MIG + index];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMigDevice) {
    LOCKED;
    ANY_DEVICE(device);
    if (!isMigDevice) return NVML_ERROR_INVALID_ARGUMENT;
    *isMigDevice = m != NULL;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t migDevice,
                                                                 nvmlDevice_t *device) {
    LOCKED;
    ANY_DEVICE(migDevice);
    if (!device || !m) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &handles[g - cfg.gpus];
    return NVML_SUCCESS;
}

static nvmlReturn_t instance_id(nvmlDevice_t device, int compute, unsigned int *id) {
    ANY_DEVICE(device);
    if (!id) return NVML_ERROR_INVALID_ARGUMENT;
    if (!m) return g->mig == MIG_NONE ? NVML_ERROR_NOT_SUPPORTED : NVML_ERROR_INVALID_ARGUMENT;
    *id = compute ? m->ci : m->gi;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id) {
    LOCKED;
    return instance_id(device, 0, id);
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id) {
    LOCKED;
    return instance_id(device, 1, id);
}

/* Only MIG devices have attributes, as the real library documents. */
EXPORT nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t device,
                                               nvmlDeviceAttributes_t *attributes) {
    LOCKED;
    ANY_DEVICE(device);
    if (!attributes) return NVML_ERROR_INVALID_ARGUMENT;
    if (!m) return NVML_ERROR_NOT_SUPPORTED;
    memset(attributes, 0, sizeof *attributes);
    attributes->multiprocessorCount = m->sm_count;
    attributes->sharedCopyEngineCount = 1;
    attributes->gpuInstanceSliceCount = 1;
    attributes->computeInstanceSliceCount = 1;
    attributes->memorySizeMB = m->total >> 20;
    return NVML_SUCCESS;
}
