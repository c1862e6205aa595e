from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProcInfo(_message.Message):
    __slots__ = ("pid", "uid", "username", "basename", "expiration", "utilization", "mem")
    PID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    BASENAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MEM_FIELD_NUMBER: _ClassVar[int]
    pid: int
    uid: int
    username: str
    basename: str
    expiration: int
    utilization: int
    mem: int
    def __init__(self, pid: _Optional[int] = ..., uid: _Optional[int] = ..., username: _Optional[str] = ..., basename: _Optional[str] = ..., expiration: _Optional[int] = ..., utilization: _Optional[int] = ..., mem: _Optional[int] = ...) -> None: ...

class GPUInfo(_message.Message):
    __slots__ = ("id", "mem_used", "mem_total", "utilization", "temp", "name", "fanspeed", "procs")
    ID_FIELD_NUMBER: _ClassVar[int]
    MEM_USED_FIELD_NUMBER: _ClassVar[int]
    MEM_TOTAL_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    TEMP_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FANSPEED_FIELD_NUMBER: _ClassVar[int]
    PROCS_FIELD_NUMBER: _ClassVar[int]
    id: int
    mem_used: int
    mem_total: int
    utilization: int
    temp: int
    name: str
    fanspeed: int
    procs: _containers.RepeatedCompositeFieldContainer[ProcInfo]
    def __init__(self, id: _Optional[int] = ..., mem_used: _Optional[int] = ..., mem_total: _Optional[int] = ..., utilization: _Optional[int] = ..., temp: _Optional[int] = ..., name: _Optional[str] = ..., fanspeed: _Optional[int] = ..., procs: _Optional[_Iterable[_Union[ProcInfo, _Mapping]]] = ...) -> None: ...

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
    __slots__ = ("id", "gpus", "disks", "ip", "hostname", "err")
    ID_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    id: str
    gpus: _containers.RepeatedCompositeFieldContainer[GPUInfo]
    disks: _containers.RepeatedCompositeFieldContainer[DiskInfo]
    ip: str
    hostname: str
    err: str
    def __init__(self, id: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[GPUInfo, _Mapping]]] = ..., disks: _Optional[_Iterable[_Union[DiskInfo, _Mapping]]] = ..., ip: _Optional[str] = ..., hostname: _Optional[str] = ..., err: _Optional[str] = ...) -> None: ...

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
