"""Parse and validate one instance's configuration.

``parse(text, source_name, overrides)`` reads the INI text, applies command-line
overrides (strings, as typed) and returns a frozen :class:`Config`, or raises
:class:`ConfigError` listing every problem at once, each naming file, section and key::

    www.conf: [sync] delay: not a number of seconds: 'ten'
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

from pirsyncd.config.destination import Destination, DestinationKind
from pirsyncd.config.options import OPTIONS, OPTIONS_BY_KEY, PER_DESTINATION, SECTIONS
from pirsyncd.config.values import convert, report_flag_problems


class ConfigError(Exception):
    """Every problem found in a configuration, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclasses.dataclass(frozen=True)
class DestinationSpec:
    """One destination of an instance: its short name, where it is, and the settings it
    overrides (from its [destination NAME] section)."""

    name: str
    destination: Destination
    settings: tuple[tuple[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class Config:
    """A validated configuration: every option of the table by its key, and the destinations
    (:meth:`per_destination` gives each one its own Config, with its section's settings)."""

    source: str
    destination: Destination  # the first destination; per_destination() gives each one
    exclude: tuple[str, ...]
    delay: float
    trigger_paths: int
    full_sync_threshold: int
    startup_sync: str
    state_file: str | None
    initial_sync: bool
    full_resync_interval: float
    audit_interval: float
    audit_content: bool
    audit_content_slices: int
    audit_repair: bool
    max_delete: int
    one_file_system: bool
    watch_backend: str
    allow_empty_source: bool
    parallel_syncs: int
    stop_timeout: float
    retry_max_interval: float
    status_file: str | None
    pause_file: str | None
    rsync_binary: str
    rsync_flags: tuple[str, ...]
    partial: bool
    append_verify: bool
    max_size: str | None
    min_size: str | None
    full_sync_checksum: bool
    deletion_mode: str
    io_timeout: float
    time_limit: float
    ssh_port: int | None
    ssh_identity_file: str | None
    ssh_options: tuple[str, ...]
    ssh_accept_new_host_key: bool
    password_file: str | None
    debug_events: bool
    debug_commands: bool
    rsync_log: str
    metrics_file: str | None
    on_sync: tuple[str, ...]
    on_failure: tuple[str, ...]
    hook_timeout: float
    instance: str = ""
    origin: str = ""
    destination_name: str = ""
    destinations: tuple[DestinationSpec, ...] = ()

    def mirror_key(self, destination: Config) -> tuple[object, ...]:
        """What decides what a destination (one of :meth:`per_destination`) holds: when it
        changes, only a full sync makes the mirror true again."""
        return (self.source, destination.destination, self.exclude, self.one_file_system, destination.rsync_flags,
                destination.max_size, destination.min_size)

    def per_destination(self) -> tuple[Config, ...]:
        """One Config for each destination, with that destination's own settings.

        >>> config = parse("[sync]\\nsource = /srv\\ndestination = web1:/srv\\n    web2:/srv\\n")
        >>> [(each.destination_name, each.destination.text) for each in config.per_destination()]
        [('web1', 'web1:/srv'), ('web2', 'web2:/srv')]
        """
        if not self.destinations:
            return (self,)
        return tuple(dataclasses.replace(self, destination=spec.destination, destination_name=spec.name,
                                         destinations=(), **dict(spec.settings)) for spec in self.destinations)


def _is_within(inner: str, outer: str) -> bool:
    inner, outer = os.path.normpath(inner), os.path.normpath(outer)
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def parse(text: str, source_name: str = "command line", overrides: Mapping[str, Any] | None = None,
          instance: str = "") -> Config:
    """Return the validated Config, or raise ConfigError with every problem found.

    ``overrides`` maps option keys to command-line values (strings, or lists of
    strings for ``exclude``); they replace what the file says.
    """
    problems: list[str] = []
    parser = configparser.ConfigParser(interpolation=None, default_section="\x00none", strict=True,
                                       empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, source=source_name)
    except configparser.Error as error:
        message = str(error).splitlines()[0]
        raise ConfigError([f"{source_name}: not a valid INI file: {message}"]) from None

    raw_values: dict[str, tuple[str, str]] = {}  # key -> (raw text, where it came from)
    named: list[tuple[str, dict[str, tuple[str, str]]]] = []  # [destination NAME] sections
    for section in parser.sections():
        match = _DESTINATION_SECTION.match(section)
        if match:
            named.append((match["name"], _destination_section(parser, section, source_name, problems)))
            continue
        if section not in SECTIONS:
            problems.append(f"{source_name}: [{section}]: unknown section (known: {', '.join(SECTIONS)}, "
                            "destination NAME)")
            continue
        for key, value in parser.items(section):
            option = OPTIONS_BY_KEY.get(key)
            if option is None or option.section != section:
                hint = f"; it belongs in [{option.section}]" if option else ""
                problems.append(f"{source_name}: [{section}] {key}: unknown key{hint}")
                continue
            raw_values[key] = (value, f"{source_name}: [{section}] {key}")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        option = OPTIONS_BY_KEY[key]
        if isinstance(value, (list, tuple)):
            value = "\n".join(value)
        raw_values[key] = (str(value), f"command line: {option.flag}")

    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    for option in OPTIONS:
        if option.key not in raw_values:
            if option.required:
                problems.append(f"{source_name}: [{option.section}] {option.key}: missing; "
                                f"add e.g. '{option.key} = {option.example}' or {option.flag}")
            values[option.key] = option.default
            continue
        raw, place = raw_values[option.key]
        where[option.key] = place
        try:
            values[option.key] = convert(option, raw)
        except ValueError as error:
            problems.append(f"{place}: {error}")
            values[option.key] = option.default

    if values["initial_sync"] is False and "startup_sync" not in raw_values:
        values["startup_sync"] = "none"  # the old spelling
    if "destination" not in raw_values and named:
        problems[:] = [problem for problem in problems if "[sync] destination: missing" not in problem]
    specs = _destination_specs(values, where, named, source_name, problems)
    if values["audit_content_slices"] > 1:  # slices of the content: content it is
        if "audit_content" in raw_values and not values["audit_content"]:
            problems.append(f"{where['audit_content_slices']}: slices of the content contradict "
                            "audit_content = no; remove one of them")
        values["audit_content"] = True
    if values["on_sync"]:
        flag_sets = [("rsync_flags", values["rsync_flags"])] + [
            (f"[destination {spec.name}] rsync_flags", dict(spec.settings)["rsync_flags"])
            for spec in specs if "rsync_flags" in dict(spec.settings)]
        for place, flags in flag_sets:
            problems += [f"{where.get(place, place)}: {problem}" for problem in report_flag_problems(flags)]
    values["destination"] = specs[0].destination if specs else Destination(DestinationKind.LOCAL, "", "/")
    if problems:
        raise ConfigError(problems)
    return Config(**values, instance=instance, origin=source_name,
                  destination_name=specs[0].name, destinations=tuple(specs))


_DESTINATION_SECTION = re.compile(r"^destination\s+(?P<name>\S+)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _destination_section(parser: configparser.ConfigParser, section: str, source_name: str,
                         problems: list[str]) -> dict[str, tuple[str, str]]:
    """The raw settings of one [destination NAME] section: 'destination' and the options
    a destination may set for itself."""
    allowed = {option.key for option in PER_DESTINATION} | {"destination"}
    raw: dict[str, tuple[str, str]] = {}
    for key, value in parser.items(section):
        if key not in allowed:
            hint = "" if key not in OPTIONS_BY_KEY else f"; it belongs in [{OPTIONS_BY_KEY[key].section}]"
            problems.append(f"{source_name}: [{section}] {key}: not a per-destination key{hint} (one of: "
                            f"destination, {', '.join(sorted(allowed - {'destination'}))})")
            continue
        raw[key] = (value, f"{source_name}: [{section}] {key}")
    return raw


def auto_name(destination: Destination, taken: set[str]) -> str:
    """A short name for a destination given without one: its host's first label (an IPv4
    address whole), or the local directory's name; made unique with -2, -3 ...

    >>> from pirsyncd.config.destination import parse_destination
    >>> auto_name(parse_destination("backup@web1.example:/srv/www"), set())
    'web1'
    >>> auto_name(parse_destination("/var/backups/www"), {"www"})
    'www-2'
    >>> auto_name(parse_destination("10.0.0.7:/srv/www"), set()), auto_name(parse_destination("[::1]:/srv"), set())
    ('10.0.0.7', 'ipv6')
    """
    if destination.kind == DestinationKind.LOCAL:
        base = os.path.basename(destination.path.rstrip("/")) or "root"
    elif destination.host.startswith("["):
        base = "ipv6"
    elif re.fullmatch(r"[0-9.]+", destination.host):
        base = destination.host  # the first label of 10.0.0.7 and 10.0.0.8 would be "10" for both
    else:
        base = destination.host.split(".")[0]
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", base).lstrip("-._") or "destination"
    name, index = base, 2
    while name in taken:
        name, index = f"{base}-{index}", index + 1
    return name


def _destination_specs(values: dict[str, Any], where: dict[str, str],
                       named: list[tuple[str, dict[str, tuple[str, str]]]], source_name: str,
                       problems: list[str]) -> list[DestinationSpec]:
    """Every destination with its name and own settings; problems for duplicates, a
    destination inside the source, and settings that do not fit."""
    specs: list[DestinationSpec] = []
    taken = {name for name, _ in named}
    for listed in values["destination"] or ():
        name = auto_name(listed, taken)
        taken.add(name)
        specs.append(DestinationSpec(name, listed))
    for name, raw in named:
        place = f"{source_name}: [destination {name}]"
        if not _NAME.match(name):
            problems.append(f"{place}: the name may hold letters, digits, '.', '_' and '-' (64 at most)")
        if "destination" not in raw:
            problems.append(f"{place} destination: missing; add e.g. 'destination = backup@web1:/srv/www'")
            continue
        settings: list[tuple[str, Any]] = []
        destination: Destination | None = None
        for key, (text, key_place) in raw.items():
            try:
                value = convert(OPTIONS_BY_KEY[key], text)
            except ValueError as error:
                problems.append(f"{key_place}: {error}")
                continue
            if key != "destination":
                settings.append((key, value))
            elif len(value) == 1:
                destination = value[0]
            else:
                problems.append(f"{key_place}: one destination per section")
        if destination is not None:
            specs.append(DestinationSpec(name, destination, tuple(settings)))
    _check_destinations(values, where, specs, source_name, problems)
    return specs


def _check_destinations(values: dict[str, Any], where: dict[str, str], specs: list[DestinationSpec],
                        source_name: str, problems: list[str]) -> None:
    source = values["source"]
    seen: dict[str, str] = {}
    several = len(specs) > 1
    for key in ("state_file", "status_file"):
        if isinstance(source, str) and values.get(key) and _is_within(values[key], source):
            problems.append(f"{where.get(key, source_name)}: {values[key]!r} is inside the source {source!r}; "
                            "every write would be a change to mirror: keep it elsewhere (e.g. /var/lib/pirsyncd)")
    for spec in specs:
        destination = spec.destination
        place = f"{source_name}: destination {spec.name} ({destination.text})" if several else where.get(
            "destination", f"{source_name}: [destination {spec.name}] destination")
        target = destination.rsync_target()
        if target in seen:
            problems.append(f"{place}: the same destination as {seen[target]}; give it once")
        seen.setdefault(target, spec.name)
        if isinstance(source, str) and destination.kind == DestinationKind.LOCAL:
            if _is_within(destination.path, source):
                problems.append(f"{place}: {destination.path!r} is inside the source {source!r}; "
                                "a mirror inside its source would copy itself forever")
            elif _is_within(source, destination.path):
                problems.append(f"{where.get('source', place)}: {source!r} is inside the destination "
                                f"{destination.path!r}; mirroring would delete the source")
        own = dict(spec.settings)
        password_file = own.get("password_file", values["password_file"])
        if password_file and destination.kind != DestinationKind.DAEMON and ("password_file" in own or not several):
            where_set = f"{source_name}: [destination {spec.name}] password_file" if "password_file" in own \
                else where["password_file"]
            problems.append(f"{where_set}: only used with an rsync daemon destination "
                            "(rsync://host/module or host::module)")



def render_sample_config() -> str:
    """A commented config covering every option, generated from the option table: each commented
    line shows the key's default (``#delay = 1``; ``#state_file =`` when it has none), so
    uncommenting it changes nothing. Examples are ``pirsyncd --examples``'s job."""
    lines = ["# pirsyncd instance configuration: copy to /etc/pirsyncd/NAME.conf and",
             "# start it with: systemctl enable --now pirsyncd@NAME",
             "# Every key can also be given on the command line as --key-name.",
             "# A commented line shows the key's default (an empty value: unset);",
             "# pirsyncd --examples shows an example of each.", ""]
    for section in SECTIONS:
        lines.append(f"[{section}]")
        for option in OPTIONS:
            if option.section != section:
                continue
            lines.append(f"# {option.help_with_bounds()}")
            if option.required:
                lines.append(f"{option.key} = {option.example}".replace("\n", "\n    "))
            else:
                lines.append(f"#{option.key} = {option.default_text()}".rstrip().replace("\n", "\n#     "))
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
