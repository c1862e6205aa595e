-- hmonitor history, schema version 3 (PRAGMA user_version; store.py sets it and migrates).
--
-- Times are integer Unix milliseconds. Memory is in bytes in raw data and in MiB in rollups.
-- Three layers:
--   head    raw rows of the last few minutes, keyed time-first so each round is an append
--           (a round touches a handful of pages, not one per GPU);
--   chunk   older raw samples, one compressed blob per series and 10-minute slice (_codec.py);
--   *_roll  bucket sums and maxima at 1 min / 10 min / 1 h (lvl = bucket length in ms), filled
--           incrementally from the head; avg = sum / n. Watermarks in meta: roll_wm (the
--           1-minute level is complete before it), coarse_wm (the 10-minute and 1-hour levels
--           are), chunk_wm (chunks hold every raw sample before it).
-- live_* tables hold what the idle-process rule needs, so readers in other connections see it.
CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;

CREATE TABLE host (hid INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE gpu (
    gid INTEGER PRIMARY KEY,
    hid INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    UNIQUE (hid, idx)
);
CREATE TABLE user (uid INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE bname (bid INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE disk (
    did INTEGER PRIMARY KEY,
    hid INTEGER NOT NULL,
    mount TEXT NOT NULL,
    device TEXT NOT NULL DEFAULT '',
    UNIQUE (hid, mount)
);

-- Head. h_round lists the rounds still in the head: per-series reads seek (t, key) for each.
CREATE TABLE h_round (t INTEGER PRIMARY KEY);
CREATE TABLE h_host (
    t INTEGER NOT NULL, hid INTEGER NOT NULL,
    up INTEGER NOT NULL,
    rtt INTEGER NOT NULL,   -- microseconds, -1 when down
    dt INTEGER NOT NULL,    -- ms since the host's previous sample, capped; weights accounting
    PRIMARY KEY (t, hid)
) WITHOUT ROWID;
CREATE TABLE h_gpu (
    t INTEGER NOT NULL, gid INTEGER NOT NULL,
    util INTEGER NOT NULL, mem INTEGER NOT NULL, total INTEGER NOT NULL,
    temp INTEGER NOT NULL, fan INTEGER NOT NULL,
    PRIMARY KEY (t, gid)
) WITHOUT ROWID;
CREATE TABLE h_proc (
    t INTEGER NOT NULL, gid INTEGER NOT NULL, pid INTEGER NOT NULL,
    uid INTEGER NOT NULL, bid INTEGER NOT NULL, mem INTEGER NOT NULL, util INTEGER NOT NULL,
    PRIMARY KEY (t, gid, pid)
) WITHOUT ROWID;
-- What accounting needs, summed by ingest so that rolling up never reads the process rows
-- (100,000 of them a round in a big cluster). h_user, per round and user: GPU-seconds (a GPU
-- shared by k users counts 1/k for each; each sample counts the time since its host's previous
-- one, capped) and GiB-seconds; deleted once rolled up. h_gpu_user, per 10-minute stretch (t is
-- its start), GPU and user: memory in MiB summed over the stretch's samples (each round adds
-- to it); deleted once folded into gpu_user_roll.
CREATE TABLE h_user (
    t INTEGER NOT NULL, uid INTEGER NOT NULL, gpu_s REAL NOT NULL, gib_s REAL NOT NULL,
    PRIMARY KEY (t, uid)
) WITHOUT ROWID;
CREATE TABLE h_gpu_user (
    t INTEGER NOT NULL, gid INTEGER NOT NULL, uid INTEGER NOT NULL, mem INTEGER NOT NULL,
    PRIMARY KEY (t, gid, uid)
) WITHOUT ROWID;
-- Slurm jobs (version 3), summed by ingest like h_user (see ingest.py for how a GPU is split
-- between jobs): per round, job, user and host, GPU-seconds and GiB-seconds of the job's
-- processes; processes outside a job add nothing. Deleted once rolled up into job_roll and
-- job_seen.
CREATE TABLE h_job (
    t INTEGER NOT NULL, job INTEGER NOT NULL, uid INTEGER NOT NULL, hid INTEGER NOT NULL,
    gpu_s REAL NOT NULL, gib_s REAL NOT NULL,
    PRIMARY KEY (t, hid, job, uid)  -- host by host, as ingest writes them
) WITHOUT ROWID;
CREATE TABLE h_disk (
    t INTEGER NOT NULL, did INTEGER NOT NULL, used INTEGER NOT NULL, total INTEGER NOT NULL,
    PRIMARY KEY (t, did)
) WITHOUT ROWID;

-- kind: 0 host, 1 gpu, 2 process, 3 disk; key: hid / gid / gid / did; t0: slice start;
-- t1: last sample in the blob.
CREATE TABLE chunk (
    kind INTEGER NOT NULL, key INTEGER NOT NULL, t0 INTEGER NOT NULL, t1 INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (kind, key, t0)
);

CREATE TABLE gpu_roll (
    lvl INTEGER NOT NULL, gid INTEGER NOT NULL, t INTEGER NOT NULL, n INTEGER NOT NULL,
    util_sum INTEGER NOT NULL, util_max INTEGER NOT NULL,
    mem_sum INTEGER NOT NULL, mem_max INTEGER NOT NULL, total INTEGER NOT NULL,
    temp_sum INTEGER NOT NULL, temp_max INTEGER NOT NULL,
    fan_sum INTEGER NOT NULL, fan_max INTEGER NOT NULL,
    PRIMARY KEY (lvl, gid, t)
) WITHOUT ROWID;
CREATE TABLE host_roll (
    lvl INTEGER NOT NULL, hid INTEGER NOT NULL, t INTEGER NOT NULL, n INTEGER NOT NULL,
    up_sum INTEGER NOT NULL, rtt_sum INTEGER NOT NULL, rtt_max INTEGER NOT NULL,
    PRIMARY KEY (lvl, hid, t)
) WITHOUT ROWID;
-- disk_roll rows at lvl 60000 are staging, never read: minutes waiting to be folded into the
-- hour level.
CREATE TABLE disk_roll (
    lvl INTEGER NOT NULL, did INTEGER NOT NULL, t INTEGER NOT NULL, n INTEGER NOT NULL,
    used_sum INTEGER NOT NULL, used_max INTEGER NOT NULL, total INTEGER NOT NULL,
    PRIMARY KEY (lvl, did, t)
) WITHOUT ROWID;
-- Accounting: GPU-seconds (shared GPUs split equally) and GiB-seconds per user; time-first
-- because every question asks about all users over a window.
CREATE TABLE user_roll (
    lvl INTEGER NOT NULL, t INTEGER NOT NULL, uid INTEGER NOT NULL,
    gpu_s REAL NOT NULL, gib_s REAL NOT NULL,
    PRIMARY KEY (lvl, t, uid)
) WITHOUT ROWID;
-- Accounting per Slurm job and user, as user_roll (hosts are in job_seen).
CREATE TABLE job_roll (
    lvl INTEGER NOT NULL, t INTEGER NOT NULL, job INTEGER NOT NULL, uid INTEGER NOT NULL,
    gpu_s REAL NOT NULL, gib_s REAL NOT NULL,
    PRIMARY KEY (lvl, t, job, uid)
) WITHOUT ROWID;
-- Where and when each job ran: per user, host and hour (t, its start), the first and last
-- rolled-up sample in it. Kept as long as the hour level (retention finds t in job_seen_t).
CREATE TABLE job_seen (
    job INTEGER NOT NULL, uid INTEGER NOT NULL, hid INTEGER NOT NULL, t INTEGER NOT NULL,
    first INTEGER NOT NULL, last INTEGER NOT NULL,
    PRIMARY KEY (job, uid, hid, t)
) WITHOUT ROWID;
CREATE INDEX job_seen_t ON job_seen (t);
-- Per-user memory (MiB) on one GPU, for the stacked chart; avg = mem_sum / gpu_roll.n.
CREATE TABLE gpu_user_roll (
    lvl INTEGER NOT NULL, gid INTEGER NOT NULL, t INTEGER NOT NULL, uid INTEGER NOT NULL,
    mem_sum INTEGER NOT NULL,
    PRIMARY KEY (lvl, gid, t, uid)
) WITHOUT ROWID;

-- t: the host's last sample with data; run_start: start of its unbroken run of samples
-- (NULL after a round without data).
CREATE TABLE live_host (hid INTEGER PRIMARY KEY, t INTEGER NOT NULL, run_start INTEGER);
-- The processes in each host's last sample, with the start of their unbroken presence.
CREATE TABLE live_proc (
    gid INTEGER NOT NULL, pid INTEGER NOT NULL, uid INTEGER NOT NULL, bid INTEGER NOT NULL,
    start INTEGER NOT NULL,
    PRIMARY KEY (gid, pid)
) WITHOUT ROWID;
-- Each GPU's utilization "suffix maxima" (samples busier than every later one) as of as_of;
-- readers replay the head rows after as_of. It answers "last sample >= X%" for any X.
CREATE TABLE live_gpu (gid INTEGER PRIMARY KEY, as_of INTEGER NOT NULL, stack TEXT NOT NULL);
