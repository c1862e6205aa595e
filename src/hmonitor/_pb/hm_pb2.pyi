from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProcInfo(_message.Message):
    __slots__ = ("pid", "uid", "username", "basename", "expiration", "utilization", "mem", "cmdline", "start_time", "container", "job", "mig")
    PID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    BASENAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MEM_FIELD_NUMBER: _ClassVar[int]
    CMDLINE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    MIG_FIELD_NUMBER: _ClassVar[int]
    pid: int
    uid: int
    username: str
    basename: str
    expiration: int
    utilization: int
    mem: int
    cmdline: str
    start_time: int
    container: Container
    job: SlurmJob
    mig: MigRef
    def __init__(self, pid: _Optional[int] = ..., uid: _Optional[int] = ..., username: _Optional[str] = ..., basename: _Optional[str] = ..., expiration: _Optional[int] = ..., utilization: _Optional[int] = ..., mem: _Optional[int] = ..., cmdline: _Optional[str] = ..., start_time: _Optional[int] = ..., container: _Optional[_Union[Container, _Mapping]] = ..., job: _Optional[_Union[SlurmJob, _Mapping]] = ..., mig: _Optional[_Union[MigRef, _Mapping]] = ...) -> None: ...

class Container(_message.Message):
    __slots__ = ("id", "runtime", "name", "pod", "host_uid", "host_user")
    ID_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    HOST_UID_FIELD_NUMBER: _ClassVar[int]
    HOST_USER_FIELD_NUMBER: _ClassVar[int]
    id: str
    runtime: str
    name: str
    pod: str
    host_uid: int
    host_user: str
    def __init__(self, id: _Optional[str] = ..., runtime: _Optional[str] = ..., name: _Optional[str] = ..., pod: _Optional[str] = ..., host_uid: _Optional[int] = ..., host_user: _Optional[str] = ...) -> None: ...

class SlurmJob(_message.Message):
    __slots__ = ("id", "step")
    ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    id: int
    step: str
    def __init__(self, id: _Optional[int] = ..., step: _Optional[str] = ...) -> None: ...

class MigRef(_message.Message):
    __slots__ = ("gpu_instance", "compute_instance")
    GPU_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    gpu_instance: int
    compute_instance: int
    def __init__(self, gpu_instance: _Optional[int] = ..., compute_instance: _Optional[int] = ...) -> None: ...

class MigInstance(_message.Message):
    __slots__ = ("gpu_instance", "compute_instance", "profile", "uuid", "mem_used", "mem_total", "sm_count")
    GPU_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    MEM_USED_FIELD_NUMBER: _ClassVar[int]
    MEM_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SM_COUNT_FIELD_NUMBER: _ClassVar[int]
    gpu_instance: int
    compute_instance: int
    profile: str
    uuid: str
    mem_used: int
    mem_total: int
    sm_count: int
    def __init__(self, gpu_instance: _Optional[int] = ..., compute_instance: _Optional[int] = ..., profile: _Optional[str] = ..., uuid: _Optional[str] = ..., mem_used: _Optional[int] = ..., mem_total: _Optional[int] = ..., sm_count: _Optional[int] = ...) -> None: ...

class GPUInfo(_message.Message):
    __slots__ = ("id", "mem_used", "mem_total", "utilization", "temp", "name", "fanspeed", "procs", "uuid", "pci_bus_id", "power_mw", "power_limit_mw", "sm_clock_mhz", "mem_clock_mhz", "throttle_reasons", "ecc_corrected", "ecc_uncorrected", "retired_pages", "remapped_rows", "mig_enabled", "mig")
    ID_FIELD_NUMBER: _ClassVar[int]
    MEM_USED_FIELD_NUMBER: _ClassVar[int]
    MEM_TOTAL_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    TEMP_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FANSPEED_FIELD_NUMBER: _ClassVar[int]
    PROCS_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    PCI_BUS_ID_FIELD_NUMBER: _ClassVar[int]
    POWER_MW_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_MW_FIELD_NUMBER: _ClassVar[int]
    SM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    MEM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    THROTTLE_REASONS_FIELD_NUMBER: _ClassVar[int]
    ECC_CORRECTED_FIELD_NUMBER: _ClassVar[int]
    ECC_UNCORRECTED_FIELD_NUMBER: _ClassVar[int]
    RETIRED_PAGES_FIELD_NUMBER: _ClassVar[int]
    REMAPPED_ROWS_FIELD_NUMBER: _ClassVar[int]
    MIG_ENABLED_FIELD_NUMBER: _ClassVar[int]
    MIG_FIELD_NUMBER: _ClassVar[int]
    id: int
    mem_used: int
    mem_total: int
    utilization: int
    temp: int
    name: str
    fanspeed: int
    procs: _containers.RepeatedCompositeFieldContainer[ProcInfo]
    uuid: str
    pci_bus_id: str
    power_mw: int
    power_limit_mw: int
    sm_clock_mhz: int
    mem_clock_mhz: int
    throttle_reasons: int
    ecc_corrected: int
    ecc_uncorrected: int
    retired_pages: int
    remapped_rows: int
    mig_enabled: bool
    mig: _containers.RepeatedCompositeFieldContainer[MigInstance]
    def __init__(self, id: _Optional[int] = ..., mem_used: _Optional[int] = ..., mem_total: _Optional[int] = ..., utilization: _Optional[int] = ..., temp: _Optional[int] = ..., name: _Optional[str] = ..., fanspeed: _Optional[int] = ..., procs: _Optional[_Iterable[_Union[ProcInfo, _Mapping]]] = ..., uuid: _Optional[str] = ..., pci_bus_id: _Optional[str] = ..., power_mw: _Optional[int] = ..., power_limit_mw: _Optional[int] = ..., sm_clock_mhz: _Optional[int] = ..., mem_clock_mhz: _Optional[int] = ..., throttle_reasons: _Optional[int] = ..., ecc_corrected: _Optional[int] = ..., ecc_uncorrected: _Optional[int] = ..., retired_pages: _Optional[int] = ..., remapped_rows: _Optional[int] = ..., mig_enabled: _Optional[bool] = ..., mig: _Optional[_Iterable[_Union[MigInstance, _Mapping]]] = ...) -> None: ...

class DiskInfo(_message.Message):
    __slots__ = ("device", "used", "total", "mount")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MOUNT_FIELD_NUMBER: _ClassVar[int]
    device: str
    used: int
    total: int
    mount: str
    def __init__(self, device: _Optional[str] = ..., used: _Optional[int] = ..., total: _Optional[int] = ..., mount: _Optional[str] = ...) -> None: ...

class HostInfo(_message.Message):
    __slots__ = ("id", "gpus", "disks", "ip", "hostname", "err", "driver_version", "cuda_version", "agent_version", "load1", "cpus", "mem_used", "mem_total")
    ID_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CUDA_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOAD1_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEM_USED_FIELD_NUMBER: _ClassVar[int]
    MEM_TOTAL_FIELD_NUMBER: _ClassVar[int]
    id: str
    gpus: _containers.RepeatedCompositeFieldContainer[GPUInfo]
    disks: _containers.RepeatedCompositeFieldContainer[DiskInfo]
    ip: str
    hostname: str
    err: str
    driver_version: str
    cuda_version: str
    agent_version: str
    load1: float
    cpus: int
    mem_used: int
    mem_total: int
    def __init__(self, id: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[GPUInfo, _Mapping]]] = ..., disks: _Optional[_Iterable[_Union[DiskInfo, _Mapping]]] = ..., ip: _Optional[str] = ..., hostname: _Optional[str] = ..., err: _Optional[str] = ..., driver_version: _Optional[str] = ..., cuda_version: _Optional[str] = ..., agent_version: _Optional[str] = ..., load1: _Optional[float] = ..., cpus: _Optional[int] = ..., mem_used: _Optional[int] = ..., mem_total: _Optional[int] = ...) -> None: ...

class RequestInfo(_message.Message):
    __slots__ = ("token", "reqtype")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    REQTYPE_FIELD_NUMBER: _ClassVar[int]
    token: str
    reqtype: str
    def __init__(self, token: _Optional[str] = ..., reqtype: _Optional[str] = ...) -> None: ...

class HistReq(_message.Message):
    __slots__ = ("id", "timestamp", "type")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    id: str
    timestamp: int
    type: str
    def __init__(self, id: _Optional[str] = ..., timestamp: _Optional[int] = ..., type: _Optional[str] = ...) -> None: ...

class HistResp(_message.Message):
    __slots__ = ("t", "v")
    T_FIELD_NUMBER: _ClassVar[int]
    V_FIELD_NUMBER: _ClassVar[int]
    t: _containers.RepeatedScalarFieldContainer[int]
    v: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, t: _Optional[_Iterable[int]] = ..., v: _Optional[_Iterable[int]] = ...) -> None: ...

class HistMap(_message.Message):
    __slots__ = ("data",)
    class DataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: HistResp
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[HistResp, _Mapping]] = ...) -> None: ...
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: _containers.MessageMap[str, HistResp]
    def __init__(self, data: _Optional[_Mapping[str, HistResp]] = ...) -> None: ...
