"""vdev: manage the virtual devices of virtual machines on any hypervisor.

Open a connection with ``vdev.connect(uri)`` (the driver is chosen by the URI's scheme:
``mock:///default``, ``qemu:///path/to/socket-dir``, ...), then list domains and devices, attach,
detach and update devices, and watch device events; ``conn.plan(doc)`` and ``conn.apply(doc)``
make domains as a desired-state document says (``conn.export(domain)`` writes one). Every blocking call releases the GIL;
``vdev.aio`` offers the same API for asyncio. Errors are ``vdev.Error`` subclasses carrying a
stable ``code``.
"""

from ._vdev import (
    CODES,
    Applied,
    ApplyReport,
    AttributeSpec,
    Backend,
    Call,
    Capabilities,
    Change,
    Connection,
    Device,
    DeviceBusy,
    InvalidDocument,
    DeviceExists,
    DeviceNotFound,
    Domain,
    DomainNotFound,
    DriverInfo,
    DuplicateScheme,
    Error,
    Event,
    Events,
    InvalidAttribute,
    InvalidUri,
    MissingAttribute,
    MockControl,
    NoDriver,
    ReadOnly,
    RemovalPending,
    RemovalRefused,
    Remote,
    Schema,
    Timeout,
    Unsupported,
    connect,
    drivers,
)
from . import aio, mock

__all__ = [
    "CODES",
    "Applied",
    "ApplyReport",
    "AttributeSpec",
    "Backend",
    "Call",
    "Capabilities",
    "Change",
    "Connection",
    "Device",
    "DeviceBusy",
    "InvalidDocument",
    "DeviceExists",
    "DeviceNotFound",
    "Domain",
    "DomainNotFound",
    "DriverInfo",
    "DuplicateScheme",
    "Error",
    "Event",
    "Events",
    "InvalidAttribute",
    "InvalidUri",
    "MissingAttribute",
    "MockControl",
    "NoDriver",
    "ReadOnly",
    "RemovalPending",
    "RemovalRefused",
    "Remote",
    "Schema",
    "Timeout",
    "Unsupported",
    "aio",
    "connect",
    "drivers",
    "error_class",
    "mock",
]


def error_class(code: str) -> type[Error]:
    """The exception class of an error ``code`` (one of ``vdev.CODES``)."""
    for cls in Error.__subclasses__():
        if getattr(cls, "code", None) == code:
            return cls
    raise ValueError(f"code: {code!r} is not an error code; codes: {', '.join(CODES)}")
