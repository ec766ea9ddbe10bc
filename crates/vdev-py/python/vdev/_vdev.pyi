"""Type stubs of vdev's native module (the classes are re-exported by ``vdev`` and ``vdev.aio``)."""

import os
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeAlias

CODES: Final[tuple[str, ...]]

class Error(Exception):
    """Every error vdev raises; ``code`` is the stable name of the condition (``vdev.CODES``)."""

    code: str | None
    report: ApplyReport | None
    """Set on the exception ``apply`` raised: the report of what was done before the failure."""
    index: int | None
    """Set for a failed entry of a batch: its position (in ``attach_batch``'s ``devices``, or in
    the document domain's ``devices`` for ``apply``)."""

class InvalidUri(Error):
    """The connection URI could not be parsed or has an option the driver does not know."""

class NoDriver(Error):
    """No driver in this package handles the URI's scheme."""

class DuplicateScheme(Error):
    """Two linked drivers claim the same URI scheme."""

class DomainNotFound(Error):
    """No domain has this name or id."""

class DeviceNotFound(Error):
    """The domain has no device of this type with this reference."""

class DeviceExists(Error):
    """A device with this reference (or one that conflicts with it) already exists."""

class InvalidAttribute(Error):
    """An attribute name or value (or a device type or reference) is malformed or not accepted."""

class MissingAttribute(Error):
    """A required attribute was not given."""

class Unsupported(Error):
    """The driver does not support this operation or device type."""

class ReadOnly(Error):
    """The connection is read-only and the operation would change something."""

class Timeout(Error):
    """An operation did not finish in time."""

class RemovalPending(Error):
    """The guest has not released the device yet: it is still there, listed as removal-pending."""

class RemovalRefused(Error):
    """The guest refused to release the device: it stays connected."""

class DeviceBusy(Error):
    """The device is held by the guest and cannot be changed as asked (a locked CD-ROM tray)."""

class InvalidDocument(Error):
    """A desired-state document is malformed or cannot be planned; the message names the place. Nothing changed."""

class Remote(Error):
    """The remote host of a +ssh URI could not be reached or used (host key, login, a dropped connection); the message carries ssh's own words and what to do."""

class Backend(Error):
    """The hypervisor or its control channel failed."""

class Domain:
    """A virtual machine. Pass it wherever a domain is taken."""

    @property
    def id(self) -> int | None:
        """The numeric id, stable while the connection is open; None where the hypervisor gives none."""
    @property
    def name(self) -> str:
        """The name."""
    @property
    def uuid(self) -> str | None:
        """The UUID, where the hypervisor has one."""
    @property
    def state(self) -> str:
        """Whether it runs: ``"running"``, ``"paused"``, ``"shut-off"``, ..., or ``"unknown"``."""
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

DomainArg: TypeAlias = str | int | Domain
"""A domain: its name, its id, or a Domain."""

class Device:
    """One device of a domain, as listed."""

    @property
    def type(self) -> str:
        """The device type (``"disk"``, ``"network"``, ...)."""
    @property
    def ref(self) -> str:
        """The reference, unique within the domain and type."""
    @property
    def state(self) -> str:
        """``"connected"``, ``"removal-pending"``, ..."""
    @property
    def attrs(self) -> dict[str, str]:
        """The attributes as the hypervisor reports them (a new dict on each access)."""

class AttributeSpec:
    """One attribute a device type accepts."""

    name: str
    aliases: list[str]
    required: bool
    description: str
    example: str
    updatable: bool

class Schema:
    """What a device type accepts (``vdev schema TYPE``)."""

    @property
    def type(self) -> str:
        """The device type."""
    @property
    def description(self) -> str:
        """What such a device is."""
    @property
    def attributes(self) -> list[AttributeSpec]:
        """The named attributes it accepts."""
    @property
    def passthrough_prefixes(self) -> list[str]:
        """Prefixes under which any attribute is passed to the hypervisor untouched."""

class Capabilities:
    """What a driver supports."""

    list_domains: bool
    list_devices: bool
    attach: bool
    detach: bool
    force_detach: bool
    events: bool
    update: bool

class DriverInfo:
    """A driver in this package."""

    name: str
    schemes: list[str]
    description: str

class Event:
    """What happened to a device."""

    @property
    def kind(self) -> Literal["added", "state-changed", "updated", "removed", "unknown"]:
        """What happened ("unknown": a kind this version of the package does not know yet)."""
    @property
    def domain(self) -> Domain:
        """The domain."""
    @property
    def type(self) -> str:
        """The device type."""
    @property
    def ref(self) -> str:
        """The device's reference."""
    @property
    def state(self) -> str | None:
        """The new state (``"state-changed"`` only)."""
    @property
    def attrs(self) -> dict[str, str] | None:
        """The changed attributes with their new values (``"updated"`` only)."""

DocumentArg: TypeAlias = dict[str, Any] | str | os.PathLike[str]
"""A desired-state document: its structure (a dict, ``{"domains": {"vm1": {"devices": [...]}}}``)
or the path of a JSON or YAML file."""

ChangeOp: TypeAlias = Literal["add", "remove", "update", "replace"]
"""What a change does (``+``, ``-``, ``~``, ``!`` in ``vdev plan``)."""

OutcomeName: TypeAlias = Literal["done", "removal-pending", "not-made", "failed", "not-tried"]
"""What became of a change of an apply."""

class Change:
    """One change of a plan. ``str(change)`` is the line ``vdev plan`` prints."""

    @property
    def op(self) -> ChangeOp:
        """``"add"``, ``"remove"``, ``"update"`` or ``"replace"`` (reported, never made by apply)."""
    @property
    def domain(self) -> str:
        """The domain, as the document names it."""
    @property
    def type(self) -> str:
        """The device type."""
    @property
    def ref(self) -> str | None:
        """The device's reference; None for an add whose reference the driver chooses."""
    @property
    def attrs(self) -> dict[str, str]:
        """An add's attributes, an update's new values, a replacement's desired values that
        differ, a removal's listed attributes (a new dict on each access)."""
    @property
    def entry(self) -> int | None:
        """The index of the document entry in its domain's ``devices``; None for the removal of
        a device of an ``exclusive`` type that no entry names."""
    @property
    def reason(self) -> str | None:
        """Why a replacement is needed (``"replace"`` only)."""
    def __eq__(self, other: object) -> bool: ...

class Applied:
    """One change of an apply and what became of it."""

    @property
    def change(self) -> Change:
        """The change (an add's ``ref`` is the new device's once made)."""
    @property
    def outcome(self) -> OutcomeName:
        """``"done"``, ``"removal-pending"`` (asked; the guest has not released the device yet),
        ``"not-made"`` (a replacement), ``"failed"`` or ``"not-tried"`` (after a failure)."""
    @property
    def error(self) -> Error | None:
        """The failure (``"failed"`` only): an instance of its vdev.Error subclass, not raised."""

class ApplyReport:
    """What ``apply`` did, change by change."""

    @property
    def changes(self) -> list[Applied]:
        """Every change of the plan with its outcome; empty when nothing needed doing."""
    @property
    def changed(self) -> bool:
        """Whether something was made or asked (a pending removal counts)."""
    @property
    def pending(self) -> int:
        """How many removals the guest has not completed yet (apply again to wait again)."""
    @property
    def error(self) -> Error | None:
        """The first failure, not raised, or None."""
    def __len__(self) -> int: ...

Scope: TypeAlias = Literal["live", "persistent", "both"]
"""Where changes go, for drivers with scopes (None: the driver's default)."""

class Call:
    """One call the mock host received."""

    @property
    def op(self) -> str:
        """The operation (``"attach"``, ...)."""
    @property
    def domain(self) -> str | None:
        """The domain's name, if any."""
    @property
    def type(self) -> str | None:
        """The device type, if any."""
    @property
    def ref(self) -> str | None:
        """The device reference, if any."""
    @property
    def error(self) -> str | None:
        """None on success, else the error's code."""

Op: TypeAlias = Literal[
    "list_domains", "lookup_domain", "device_types", "list_devices",
    "attach", "detach", "events", "update",
]  # fmt: skip

class MockControl:
    """A handle on a mock host: faults, latency, pending removals, the call log."""

    def fail_nth(self, op: Op, nth: int, code: str) -> None:
        """Make the ``nth`` call of ``op`` from now fail with the error of ``code``."""
    def clear_faults(self) -> None:
        """Remove every fault not yet triggered."""
    def set_latency(self, seconds: float) -> None:
        """Add ``seconds`` of latency to every call."""
    def set_removal(self, removal: Literal["immediate", "pending", "refuse"] | float) -> None:
        """How the simulated guest answers detach from now on."""
    def set_guest(
        self,
        *,
        removal: Literal["immediate", "pending", "refuse"] | float | None = None,
        tray_locked: bool | None = None,
        busy: int | None = None,
        connect: Literal["immediate", "never"] | float | None = None,
        domain: str | None = None,
        device: tuple[str, str] | None = None,
    ) -> Any:
        """Set guest knobs for the host, a domain (``domain=``) or a device (``device=(TYPE, REF)``
        too); None leaves a knob as it is (awaitable on an asyncio connection, for a domain or
        device)."""
    def release(self) -> Any:
        """Release every pending removal; how many (``int``; awaitable on an asyncio connection)."""
    def calls(self) -> list[Call]:
        """The calls received so far, oldest first."""
    def call_count(self, op: Op) -> int:
        """How many calls of ``op`` the host received."""
    def clear_calls(self) -> None:
        """Forget the logged calls (the counts stay)."""

class Events(Iterator[Event]):
    """Device events; iterating blocks until the next one."""

    def __iter__(self) -> Self: ...
    def __next__(self) -> Event: ...
    def next(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after ``timeout`` seconds or at the end."""
    def close(self) -> None:
        """Stop receiving events."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> bool: ...

class AsyncEvents(AsyncIterator[Event]):
    """Device events for ``async for``."""

    def __aiter__(self) -> Self: ...
    def __anext__(self) -> Awaitable[Event]: ...
    def next(self, timeout: float | None = None) -> Awaitable[Event | None]:
        """Await the next event; None after ``timeout`` seconds or at the end."""
    def close(self) -> None:
        """Stop receiving events."""

class Connection:
    """An open connection to one hypervisor; calls block with the GIL released."""

    def domains(self) -> list[Domain]:
        """Every domain on the host."""
    def domain(self, key: DomainArg) -> Domain:
        """The domain named by a name or an id, as the ``vdev`` command accepts."""
    def lookup(self, key: DomainArg) -> Domain:
        """The domain with exactly this id (int) or name (str)."""
    def device_types(self) -> list[Schema]:
        """The device types the driver supports."""
    def schema(self, type: str, /) -> Schema:
        """The attributes device type ``type`` accepts."""
    def devices(self, domain: DomainArg, type: str | None = None) -> list[Device]:
        """The devices of ``domain``, of one type or all."""
    def attach(
        self,
        domain: DomainArg,
        type: str,
        attrs: Mapping[str, str] | None = None,
        /,
        *,
        scope: Scope | None = None,
        **kwattrs: str,
    ) -> str:
        """Create a device; returns its reference."""
    def detach(
        self,
        domain: DomainArg,
        type: str,
        ref: str,
        *,
        timeout: float | None = None,
        force: bool = False,
        scope: Scope | None = None,
    ) -> None:
        """Remove a device; RemovalPending when the guest has not released it within ``timeout``."""
    def update(
        self,
        domain: DomainArg,
        type: str,
        ref: str,
        attrs: Mapping[str, str] | None = None,
        /,
        *,
        scope: Scope | None = None,
        **kwattrs: str,
    ) -> None:
        """Change updatable attributes of an existing device in place."""
    def attach_batch(
        self, domain: DomainArg, devices: Sequence[tuple[str, Mapping[str, str]]], /, *, scope: Scope | None = None
    ) -> list[str]:
        """Create several devices in one batch, all or none; their references, in order. A failed
        entry raises its own error's class, with ``index`` set and nothing left attached."""
    def plan(self, doc: DocumentArg) -> list[Change]:
        """What ``apply(doc)`` would change, changing nothing; InvalidDocument naming the place."""
    def apply(
        self, doc: DocumentArg, *, timeout: float | None = None, scope: Scope | None = None, check: bool = True
    ) -> ApplyReport:
        """Make the domains as ``doc`` says. A failed change raises its own class, whose
        ``report`` is what was done (``check=False``: the report is returned, with ``error``)."""
    def export(self, domain: DomainArg) -> dict[str, Any]:
        """A desired-state document of what ``domain`` has now (``plan`` of it is empty)."""
    def events(self) -> Events:
        """Device events of every domain from now on."""
    def watch(self, domain: DomainArg) -> Events:
        """Device events of one domain from now on."""
    @property
    def capabilities(self) -> Capabilities:
        """What the driver supports."""
    def is_read_only(self) -> bool:
        """Whether changes are refused."""
    @property
    def readonly(self) -> bool:
        """Whether changes are refused."""
    @property
    def driver(self) -> str:
        """The driver's name."""
    @property
    def uri(self) -> str:
        """The URI (without any password)."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    @property
    def control(self) -> MockControl | None:
        """The mock host's control handle (``vdev.mock.connect`` only)."""
    def close(self) -> None:
        """Close the connection."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> bool: ...

class AsyncConnection:
    """An open connection for asyncio: the methods of ``Connection``, awaited."""

    async def domains(self) -> list[Domain]:
        """Every domain on the host."""
    async def domain(self, key: DomainArg) -> Domain:
        """The domain named by a name or an id."""
    async def lookup(self, key: DomainArg) -> Domain:
        """The domain with exactly this id (int) or name (str)."""
    async def device_types(self) -> list[Schema]:
        """The device types the driver supports."""
    async def schema(self, type: str, /) -> Schema:
        """The attributes device type ``type`` accepts."""
    async def devices(self, domain: DomainArg, type: str | None = None) -> list[Device]:
        """The devices of ``domain``, of one type or all."""
    async def attach(
        self,
        domain: DomainArg,
        type: str,
        attrs: Mapping[str, str] | None = None,
        /,
        *,
        scope: Scope | None = None,
        **kwattrs: str,
    ) -> str:
        """Create a device; returns its reference."""
    async def detach(
        self,
        domain: DomainArg,
        type: str,
        ref: str,
        *,
        timeout: float | None = None,
        force: bool = False,
        scope: Scope | None = None,
    ) -> None:
        """Remove a device."""
    async def update(
        self,
        domain: DomainArg,
        type: str,
        ref: str,
        attrs: Mapping[str, str] | None = None,
        /,
        *,
        scope: Scope | None = None,
        **kwattrs: str,
    ) -> None:
        """Change updatable attributes of an existing device in place."""
    async def attach_batch(
        self, domain: DomainArg, devices: Sequence[tuple[str, Mapping[str, str]]], /, *, scope: Scope | None = None
    ) -> list[str]:
        """Create several devices in one batch, all or none; their references, in order."""
    async def plan(self, doc: DocumentArg) -> list[Change]:
        """What ``apply(doc)`` would change, changing nothing."""
    async def apply(
        self, doc: DocumentArg, *, timeout: float | None = None, scope: Scope | None = None, check: bool = True
    ) -> ApplyReport:
        """Make the domains as ``doc`` says (failures as ``Connection.apply``)."""
    async def export(self, domain: DomainArg) -> dict[str, Any]:
        """A desired-state document of what ``domain`` has now."""
    def events(self) -> AsyncEvents:
        """Device events of every domain from now on."""
    def watch(self, domain: DomainArg) -> AsyncEvents:
        """Device events of one domain from now on."""
    @property
    def capabilities(self) -> Capabilities:
        """What the driver supports."""
    def is_read_only(self) -> bool:
        """Whether changes are refused."""
    @property
    def readonly(self) -> bool:
        """Whether changes are refused."""
    @property
    def driver(self) -> str:
        """The driver's name."""
    @property
    def uri(self) -> str:
        """The URI (without any password)."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    @property
    def control(self) -> MockControl | None:
        """The mock host's control handle (``vdev.aio.mock_connect`` only)."""
    async def close(self) -> None:
        """Close the connection."""
    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *exc: object) -> bool: ...

def connect(uri: str, readonly: bool = False) -> Connection:
    """Open a connection; the driver is chosen by the URI's scheme."""

def connect_async(uri: str, readonly: bool = False) -> Awaitable[AsyncConnection]:
    """Open a connection for asyncio."""

def mock_connect(uri: str = "mock:///default", readonly: bool = False, aio: bool = False) -> Any:
    """Open a mock host with its control handle (a Connection, or an AsyncConnection with aio)."""

def drivers() -> list[DriverInfo]:
    """Every driver in this package."""
