"""The desired-state file (format version 1): YAML in, a frozen DesiredState out.

Validation is strict and complete: every problem in the file is reported at once as
`file:line: field: message`, and a file with any problem is rejected whole, so the caller
keeps the last good one in force. PyYAML's composer gives each node its line; pydantic
checks types; cross-references (VM -> storage, VM -> VM, node lists) are checked here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)

from controller.model.desired_checks import Path_, cross_check, field_path
from controller.model.errors import DesiredStateError
from controller.model.names import (
    DOMAIN_NAME,
    NODE_NAME,
    RESOURCE_ID,
    conventional_resource,
    did_you_mean,
)

ResourceId = Annotated[str, Field(pattern=RESOURCE_ID.pattern, strict=True)]
NodeName = Annotated[str, Field(pattern=NODE_NAME.pattern, strict=True)]
DomainName = Annotated[str, Field(pattern=DOMAIN_NAME.pattern, strict=True)]
Name = Annotated[str, Field(pattern=RESOURCE_ID.pattern, strict=True)]
AbsPath = Annotated[str, Field(pattern=r"^/[^\x00\n]*$", strict=True)]
PROPERTY_NAME = r"^[a-z][a-z0-9-]{0,63}$"
PropertyName = Annotated[str, Field(pattern=PROPERTY_NAME, strict=True)]
PropertyValue = Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]{0,1024}$", strict=True)]

_PATTERN_WORDS = {
    RESOURCE_ID.pattern: "not a valid Pacemaker id (a letter or '_' first, then letters, "
    "digits, '_', '-', '.')",
    NODE_NAME.pattern: "not a valid node name",
    DOMAIN_NAME.pattern: "not a valid libvirt domain name",
    r"^/[^\x00\n]*$": "must be an absolute path",
    PROPERTY_NAME: "not a Pacemaker option name (lower-case letters, digits and '-')",
    r"^[^\x00-\x1f\x7f]{0,1024}$": "must be one line of printable text (at most 1024 characters)",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Placement(_Strict):
    allowed: tuple[NodeName, ...] | None = None
    prefer: NodeName | None = None


class Recovery(_Strict):
    """Pacemaker's own recovery, set on the VM resources: after `migration_threshold` failures
    on a node the VM is banned from it until `failure_timeout_seconds` have passed."""

    migration_threshold: Annotated[StrictInt, Field(ge=0, le=1_000_000)] = 3
    failure_timeout_seconds: Annotated[StrictInt, Field(ge=0, le=31_536_000)] = 600


ParamValue = Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]{0,1024}$", strict=True)]
ParamName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", strict=True)]


class Vm(_Strict):
    name: DomainName
    resource: ResourceId | None = None
    # absent: take the VM out of the cluster (reconcilers/enroll.py); with keep_running the
    # domain goes on running where it is, unmanaged, else Pacemaker stops it first.
    state: Literal["running", "stopped", "absent"] = "running"
    keep_running: StrictBool = False
    placement: Placement = Placement()
    storage: tuple[Name, ...] = ()
    anti_affinity: tuple[DomainName, ...] = ()
    recovery: Recovery | None = None  # overrides policy.recovery for this VM
    # Enrollment (a VM whose resource does not exist yet): VirtualDomain's `config`, on the
    # declared shared storage, and how the resource is made.
    config: AbsPath | None = None
    hypervisor: ParamValue = "qemu:///system"
    migration_transport: Literal["ssh", "tcp", "tls"] | None = None
    params: dict[ParamName, ParamValue] = {}  # further VirtualDomain parameters
    meta: dict[PropertyName, PropertyValue] = {}  # meta attributes besides allow-migrate
    # The operator's cleanup (`pcs resource cleanup`, the web view's "clean up"): failures of
    # this VM that happened up to this instant are cleaned once, through the guard and the
    # preview, whatever the automatic cleanup's backoff and circuit breaker say. Later
    # failures are the policy's again.
    clean_failures_before: AwareDatetime | None = None

    @field_validator("clean_failures_before", mode="before")
    @classmethod
    def _written_time(cls, value: Any) -> Any:
        # as text only: a bare number would be read as seconds since 1970
        if value is not None and not isinstance(value, str):
            raise ValueError("not a time with its zone (ISO 8601, e.g. 2026-12-02T10:40:12Z)")
        return value

    @property
    def resource_id(self) -> str:
        return self.resource or conventional_resource(self.name)

    @property
    def wants_stopped(self) -> bool:
        """Pacemaker should stop it: `stopped`, or `absent` without keep_running."""
        return self.state == "stopped" or (self.state == "absent" and not self.keep_running)


class Storage(_Strict):
    name: Name
    resource: ResourceId
    mountpoint: AbsPath
    requires: tuple[ResourceId, ...] = ()


NodeState = Literal["online", "standby", "maintenance"]


class NodeSpec(_Strict):
    """A node with the state kvm-warden keeps it in (standby drains it through Pacemaker)."""

    name: NodeName
    state: NodeState = "online"


class Cluster(_Strict):
    # Names and values reach the CIB: Pacemaker option names, values on one line.
    properties: dict[PropertyName, PropertyValue] = {}
    # Extension of v1 (optional): the cluster's node names, so that node references are checked;
    # an entry may be a mapping with a state (online | standby | maintenance) to drain a node.
    nodes: tuple[NodeName | NodeSpec, ...] | None = None

    def node_names(self) -> tuple[str, ...]:
        return tuple(n if isinstance(n, str) else n.name for n in self.nodes or ())

    def node_states(self) -> dict[str, NodeState]:
        """The nodes whose state the file declares. A plain name declares none: a node an
        operator put in standby by hand stays there."""
        return {n.name: n.state for n in self.nodes or () if isinstance(n, NodeSpec)}

    @field_validator("properties", mode="before")
    @classmethod
    def _pacemaker_strings(cls, value: Any) -> Any:
        # YAML turns `stonith-enabled: true` into a bool; Pacemaker stores every property as text.
        if isinstance(value, dict):
            return {
                k: ("true" if v else "false") if isinstance(v, bool) else
                (str(v) if isinstance(v, int) else v)
                for k, v in value.items()
            }
        return value


class Policy(_Strict):
    dry_run: StrictBool = False
    resync_seconds: Annotated[StrictInt, Field(ge=1, le=86400)] = 30
    max_actions_per_minute: Annotated[StrictInt, Field(ge=1)] = 20
    max_concurrent_migrations: Annotated[StrictInt, Field(ge=1)] = 2
    prefer_score: Annotated[StrictInt, Field(ge=-1_000_000, le=1_000_000)] = 1000
    clear_move_leftovers: StrictBool = True
    # health's automatic cleanups of failures whose cause has cleared; off, failures are only
    # reported (what an exported file starts with: adopting a cluster changes nothing).
    clean_failures: StrictBool = True
    recovery: Recovery | None = None  # migration-threshold / failure-timeout of every VM
    # A patch Pacemaker would answer by stopping, restarting or cold-moving a running VM the
    # file does not ask to stop is refused (would-disrupt) unless this is true.
    allow_disruption: StrictBool = False
    preview_timeout_seconds: Annotated[StrictInt, Field(ge=1, le=3600)] = 30
    # A cluster VM paused (I/O error, watchdog, `virsh suspend`...) longer than the grace is
    # reported; `restart` also has Pacemaker recover it (crm_resource --fail), never virsh.
    on_pause: Literal["report", "restart"] = "report"
    pause_grace_seconds: Annotated[StrictInt, Field(ge=0, le=86400)] = 2


class HistoryPolicy(_Strict):
    # Rows of the history database (state directory) older than this are deleted.
    retention_days: Annotated[StrictInt, Field(ge=1, le=3650)] = 30


def _yaml_off(value: object) -> object:
    """`rebalance: off` as an operator writes it: YAML 1.1 reads a bare off as false."""
    return "off" if value is False else value


class Capacity(_Strict):
    """Sizes and capacity in Pacemaker (utilization), so that its scheduler places VMs where
    they fit -- after a node's failure too. Each VM's utilization is its vCPUs and memory (its
    domain XML) plus `vm_overhead_mib`; each node's is what libvirt says it has minus the
    host's reserve. `tolerate`: node failures the cluster must absorb with every VM running
    (each node alone, and every group of that many at once)."""

    placement_strategy: Literal["utilization", "balanced", "minimal"] = "balanced"
    vm_overhead_mib: Annotated[StrictInt, Field(ge=0, le=65536)] = 64
    host_reserve_mib: Annotated[StrictInt, Field(ge=0)] = 1024
    host_reserve_cpus: Annotated[StrictInt, Field(ge=0, le=1024)] = 0
    # at most all nodes but one are taken out (a group of k fails at once: N+k)
    tolerate: Annotated[StrictInt, Field(ge=0, le=8)] = 1
    # hold: a change that would leave a VM without room after a node failure (where it has
    # room today) is not made; warn: it is made and said.
    admission: Literal["hold", "warn"] = "hold"
    # Balance by load (controller/model/balance.py): propose one live migration at a time when
    # the nodes' CPU load differs by more than the threshold (a fraction of a node's cores)
    # and the move lowers it by the margin; a VM that arrived within the cooldown stays. The
    # proposal is a finding; with apply, once the same proposal has held
    # `rebalance_hold_seconds` (the load stays uneven over several listings), kvm-warden makes
    # it through Pacemaker, one move at a time.
    rebalance: Annotated[Literal["off", "propose", "apply"], BeforeValidator(_yaml_off)] = "off"
    rebalance_threshold: Annotated[float, Field(gt=0, le=1)] = 0.3
    rebalance_margin: Annotated[float, Field(gt=0, le=1)] = 0.1
    rebalance_cooldown_seconds: Annotated[StrictInt, Field(ge=0, le=86400)] = 600
    rebalance_hold_seconds: Annotated[StrictInt, Field(ge=0, le=86400)] = 90


class Upgrade(_Strict):
    """A rolling upgrade: each node of `order` in turn drained, upgraded by the operator (or
    their tooling), brought back and verified, never two at once (controller/model/upgrade.py).
    `to`: the release a node's kvm-warden agent reports once upgraded ("Debian 13" matches
    "Debian 13.8"). Remove the section when every node is done."""

    to: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
    order: Annotated[tuple[NodeName, ...], Field(min_length=1)]


class DesiredState(_Strict):
    version: Literal[1]
    cluster: Cluster = Cluster()
    storage: tuple[Storage, ...] = ()
    vms: tuple[Vm, ...] = ()
    policy: Policy = Policy()
    capacity: Capacity | None = None
    upgrade: Upgrade | None = None
    history: HistoryPolicy = HistoryPolicy()

    def storage_by_name(self) -> dict[str, Storage]:
        return {s.name: s for s in self.storage}

    def vm_by_name(self) -> dict[str, Vm]:
        return {v.name: v for v in self.vms}

    def recovery_of(self, vm: Vm) -> Recovery | None:
        return vm.recovery or self.policy.recovery




def load_desired(path: str | Path) -> DesiredState:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DesiredStateError([f"{p}: cannot read: {exc}"]) from None
    return parse_desired(text, source=str(p))


# Bounds that no real desired file comes near (5,000 VMs: ~0.5 MB, ~60,000 nodes), and that
# stop a file from stalling the controller: an alias "bomb" of a few hundred bytes expands to
# billions of nodes, and a hot reload runs inside the loop.
MAX_BYTES = 16 * 1024 * 1024
MAX_NODES = 1_000_000
MAX_DEPTH = 64
_SCALAR_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("str", "int", "bool", "null", "float"))
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
# libyaml's parser (C) when PyYAML was built with it: the same nodes and marks, ~10x faster.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_desired(text: str, *, source: str = "<desired>") -> DesiredState:
    if len(text) > MAX_BYTES:
        raise DesiredStateError([f"{source}:1: (document): the file is larger than "
                                 f"{MAX_BYTES // (1024 * 1024)} MiB"])
    try:
        try:
            node = yaml.compose(text, Loader=_Loader)
        except yaml.YAMLError:
            # libyaml's words are terser: the pure-Python parser says what it expected.
            node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line, what = _yaml_error_at(exc, text)
        raise DesiredStateError([f"{source}:{line}: (document): {what}"]) from None
    except yaml.YAMLError as exc:
        raise DesiredStateError([f"{source}:1: (document): {exc}"]) from None
    except RecursionError:
        raise DesiredStateError([f"{source}:1: (document): nested too deeply"]) from None
    if node is None:
        raise DesiredStateError([f"{source}:1: (document): the file is empty"])

    lines: dict[Path_, int] = {}
    problems: list[tuple[int, str]] = []
    try:
        data = _Converter(lines, problems).convert(node, ())
    except _TooLarge as exc:
        raise DesiredStateError([f"{source}:{exc.line}: (document): {exc}"]) from None
    if not isinstance(data, dict):
        problems.append((node.start_mark.line + 1, "(document): expected a mapping at the top"))
        raise DesiredStateError(_format(problems, source))
    if problems:  # tags, merge keys, recursive aliases: the structure itself is not usable
        raise DesiredStateError(_format(problems, source))
    version = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode)
                    and k.value == "version"), None) if isinstance(node, yaml.MappingNode) else None
    if isinstance(version, yaml.ScalarNode) and data.get("version") == 1 and (
            version.value != "1" or version.tag != "tag:yaml.org,2002:int"):
        # `true`, `1.0` or `0x1` must not pass for version 1 (Python's True == 1 == 1.0).
        raise DesiredStateError([f"{source}:{version.start_mark.line + 1}: version: unsupported "
                                 f"format version {version.value} (this kvm-warden reads "
                                 "version 1)"])

    result: DesiredState | None = None
    try:
        result = DesiredState.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            problems.append((_line_for(loc, lines), f"{field_path(loc)}: {_message(err)}"))
    problems.extend(
        (_line_for(loc, lines), f"{field_path(loc)}: {msg}")
        for loc, msg in cross_check(data)
    )
    if problems or result is None:
        raise DesiredStateError(_format(problems, source))
    return result


def _yaml_error_at(exc: yaml.MarkedYAMLError, text: str) -> tuple[int, str]:
    """The line an operator must fix. The scanner notices a missing ':' or an unclosed quote
    only on a later line (or at the end of the file): the line it was scanning is the one."""
    last = text.count("\n") + (0 if text.endswith("\n") else 1)
    mark, context = exc.problem_mark, exc.context_mark
    scanning = bool(exc.context and exc.context.startswith("while scanning"))
    if context is not None and (mark is None or scanning or mark.line + 1 > last):
        return context.line + 1, f"{exc.problem} ({exc.context})"
    line = min(mark.line + 1, max(last, 1)) if mark is not None else 1
    return line, str(exc.problem or exc)


def _format(problems: list[tuple[int, str]], source: str) -> list[str]:
    seen: set[tuple[int, str]] = set()
    out = []
    for line, msg in sorted(problems):
        if (line, msg) not in seen:
            seen.add((line, msg))
            out.append(f"{source}:{line}: {msg}")
    return out


class _TooLarge(Exception):
    def __init__(self, message: str, line: int):
        self.line = line
        super().__init__(message)


class _Converter:
    """YAML nodes -> plain Python, recording each path's line, bounded in size and depth.

    Only what a desired file needs: mappings with string keys, sequences, and scalars with
    YAML's core tags (string, int, bool, null, float). Every other tag, a merge key (`<<`) or an
    alias that contains itself is a problem at its line, like any other error."""

    def __init__(self, lines: dict[Path_, int], problems: list[tuple[int, str]]):
        self.lines = lines
        self.problems = problems
        self.nodes = 0
        self.active: set[int] = set()

    def convert(self, node: yaml.Node, path: Path_) -> Any:
        line = node.start_mark.line + 1
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooLarge(f"expands to more than {MAX_NODES:,} YAML nodes (aliases?); "
                            "write the file out without them", line)
        if len(path) > MAX_DEPTH:
            raise _TooLarge(f"nested more than {MAX_DEPTH} levels deep", line)
        if id(node) in self.active:
            self.problems.append((line, f"{field_path(path) or '(document)'}: an alias that "
                                        "contains itself"))
            return None
        self.lines[path] = line
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
        finally:
            self.active.discard(id(node))

    def mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            kline = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                self.problems.append((kline, f"{field_path(path) or '(document)'}: YAML merge keys "
                                             "(<<) are not supported; write the keys out"))
                continue
            key = self.scalar(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.problems.append((kline, f"{field_path(path) or '(document)'}: keys must be "
                                             "strings"))
                continue
            if key in out:
                self.problems.append((kline, f"{field_path((*path, key))}: duplicate key"))
                continue
            out[key] = self.convert(value_node, (*path, key))
            self.lines[(*path, key)] = kline
        return out

    def scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        line = node.start_mark.line + 1
        if node.tag == _TIMESTAMP_TAG:
            return node.value  # as written: the field's own type parses it (its time zone too)
        if node.tag not in _SCALAR_TAGS:
            self.problems.append((line, f"{field_path(path) or '(document)'}: unsupported YAML tag "
                                        f"{node.tag!r}"))
            return None
        try:
            return _constructor.construct_object(node, deep=True)
        except (ValueError, yaml.YAMLError):
            kind = node.tag.rsplit(":", 1)[-1]
            self.problems.append((line, f"{field_path(path) or '(document)'}: {node.value!r} is not "
                                        f"a valid {kind}"))
            return None


_constructor = yaml.SafeLoader("")


def _line_for(loc: Path_, lines: dict[Path_, int]) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field" + did_you_mean(str(err["loc"][-1]), _fields_at(err["loc"][:-1]))
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error" and err["loc"] == ("version",):
        return f"unsupported format version {err.get('input')!r} (this kvm-warden reads version 1)"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    if kind == "timezone_aware" or kind.startswith(("datetime_", "date_")):
        return "not a time with its zone (ISO 8601, e.g. 2026-12-02T10:40:12Z)"
    if kind == "string_pattern_mismatch":
        pattern = err.get("ctx", {}).get("pattern", "")
        return _PATTERN_WORDS.get(pattern, str(err["msg"]))
    if kind in ("string_type", "int_type", "bool_type", "dict_type", "tuple_type", "list_type"):
        wanted = kind.split("_")[0].replace("tuple", "list").replace("dict", "mapping")
        got = type(err.get("input")).__name__.replace("NoneType", "null").replace("dict", "mapping")
        return f"expected a {wanted}, got {got}"
    return str(err["msg"])


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The field names the model at `loc` (a pydantic error's location) accepts."""
    model: type[BaseModel] | None = DesiredState
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field is not None else None
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds, inside lists, tuples, unions and Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def desired_json_schema() -> dict[str, Any]:
    schema = DesiredState.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kvm-warden desired state, version 1"
    return schema
