"""The hall's inventory: the models (``models``), the YAML loader with file:line:col problems
(``load``), the built-in class profiles (``profiles``), notification routing (``notifications``)
and the reload holder (``reload``).

``from monitor.inventory import Device, Inventory, ...`` names the models; the loader and the
holder are imported from their own modules (they pull in YAML and I/O).
"""

from monitor.inventory.models import (
    _DAYS as _DAYS,
)
from monitor.inventory.models import (
    _DURATION_PART as _DURATION_PART,
)
from monitor.inventory.models import (
    _DURATION_RE as _DURATION_RE,
)
from monitor.inventory.models import (
    _ENV_REF as _ENV_REF,
)
from monitor.inventory.models import (
    _ID_RE as _ID_RE,
)
from monitor.inventory.models import (
    _SPAN_RE as _SPAN_RE,
)
from monitor.inventory.models import (
    _UNIT_SECONDS as _UNIT_SECONDS,
)
from monitor.inventory.models import (
    BUILTIN_CLASSES as BUILTIN_CLASSES,
)
from monitor.inventory.models import (
    DEFAULT_CATEGORIES as DEFAULT_CATEGORIES,
)
from monitor.inventory.models import (
    DEFAULT_REPORTS as DEFAULT_REPORTS,
)
from monitor.inventory.models import (
    PASSIVE_KINDS as PASSIVE_KINDS,
)
from monitor.inventory.models import (
    TRAP_CHECK as TRAP_CHECK,
)
from monitor.inventory.models import (
    TRAP_CHECKS as TRAP_CHECKS,
)
from monitor.inventory.models import (
    TRAP_DOWN_CHECK as TRAP_DOWN_CHECK,
)
from monitor.inventory.models import (
    Address as Address,
)
from monitor.inventory.models import (
    AutoTicketRule as AutoTicketRule,
)
from monitor.inventory.models import (
    Check as Check,
)
from monitor.inventory.models import (
    CheckBase as CheckBase,
)
from monitor.inventory.models import (
    CheckOverride as CheckOverride,
)
from monitor.inventory.models import (
    Condition as Condition,
)
from monitor.inventory.models import (
    Defaults as Defaults,
)
from monitor.inventory.models import (
    Device as Device,
)
from monitor.inventory.models import (
    DeviceClass as DeviceClass,
)
from monitor.inventory.models import (
    Discovery as Discovery,
)
from monitor.inventory.models import (
    DiscoveryRule as DiscoveryRule,
)
from monitor.inventory.models import (
    Duration as Duration,
)
from monitor.inventory.models import (
    Fault as Fault,
)
from monitor.inventory.models import (
    HttpCheck as HttpCheck,
)
from monitor.inventory.models import (
    IcmpCheck as IcmpCheck,
)
from monitor.inventory.models import (
    Id as Id,
)
from monitor.inventory.models import (
    Inventory as Inventory,
)
from monitor.inventory.models import (
    Location as Location,
)
from monitor.inventory.models import (
    MaintenanceWindow as MaintenanceWindow,
)
from monitor.inventory.models import (
    MetricName as MetricName,
)
from monitor.inventory.models import (
    MockCheck as MockCheck,
)
from monitor.inventory.models import (
    OidEntry as OidEntry,
)
from monitor.inventory.models import (
    OidSpec as OidSpec,
)
from monitor.inventory.models import (
    Polling as Polling,
)
from monitor.inventory.models import (
    Port as Port,
)
from monitor.inventory.models import (
    ProbeKind as ProbeKind,
)
from monitor.inventory.models import (
    PushCheck as PushCheck,
)
from monitor.inventory.models import (
    Ratio as Ratio,
)
from monitor.inventory.models import (
    ReportSchedule as ReportSchedule,
)
from monitor.inventory.models import (
    ResolvedCheck as ResolvedCheck,
)
from monitor.inventory.models import (
    Schedule as Schedule,
)
from monitor.inventory.models import (
    Secret as Secret,
)
from monitor.inventory.models import (
    SecretFile as SecretFile,
)
from monitor.inventory.models import (
    Simulation as Simulation,
)
from monitor.inventory.models import (
    Site as Site,
)
from monitor.inventory.models import (
    SiteCalendar as SiteCalendar,
)
from monitor.inventory.models import (
    SnmpCheck as SnmpCheck,
)
from monitor.inventory.models import (
    SnmpCredential as SnmpCredential,
)
from monitor.inventory.models import (
    Span as Span,
)
from monitor.inventory.models import (
    StrictModel as StrictModel,
)
from monitor.inventory.models import (
    TcpCheck as TcpCheck,
)
from monitor.inventory.models import (
    Threshold as Threshold,
)
from monitor.inventory.models import (
    TicketPolicy as TicketPolicy,
)
from monitor.inventory.models import (
    TrapCheck as TrapCheck,
)
from monitor.inventory.models import (
    TrapMatch as TrapMatch,
)
from monitor.inventory.models import (
    TrapRule as TrapRule,
)
from monitor.inventory.models import (
    VarBindCondition as VarBindCondition,
)
from monitor.inventory.models import (
    _check_address as _check_address,
)
from monitor.inventory.models import (
    _check_id as _check_id,
)
from monitor.inventory.models import (
    _check_schedule as _check_schedule,
)
from monitor.inventory.models import (
    _check_timezone as _check_timezone,
)
from monitor.inventory.models import (
    _oid_shorthand as _oid_shorthand,
)
from monitor.inventory.models import (
    _pick_secret as _pick_secret,
)
from monitor.inventory.models import (
    parse_duration as parse_duration,
)
from monitor.inventory.models import (
    parse_schedule as parse_schedule,
)
from monitor.inventory.models import (
    read_secret_file as read_secret_file,
)
from monitor.inventory.models import (
    resolve_secret as resolve_secret,
)
from monitor.inventory.models import (
    schema as schema,
)
