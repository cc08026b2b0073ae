"""The option table, the man pages and the example config must agree.

``pirsyncd/config/options.py`` is the single source of truth. Adding, renaming, moving
or removing an option, or changing its help, without updating
``docs/pirsyncd.8.rst``, ``docs/pirsyncd.conf.5.rst`` and
``etc/pirsyncd/example.conf`` fails here, naming what to change.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from pirsyncd.config.options import OPTIONS, SECTIONS, Option

ROOT = Path(__file__).resolve().parents[2]
MAN8 = ROOT / "docs" / "pirsyncd.8.rst"
MAN5 = ROOT / "docs" / "pirsyncd.conf.5.rst"
EXAMPLE_CONF = ROOT / "etc" / "pirsyncd" / "example.conf"

_HEADING_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+<>:.])\1+$")


def split_rst_sections(text: str) -> dict[str, str]:
    """Map each heading's title to the text up to the next heading of any level.

    >>> split_rst_sections("Aa\\n==\\none\\n\\nBb\\n--\\ntwo\\n")
    {'Aa': 'one\\n\\n', 'Bb': 'two\\n'}
    """
    lines = text.splitlines()
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        following = lines[index + 1] if index + 1 < len(lines) else ""
        is_title = line.strip() and not line.startswith(" ")
        if is_title and _HEADING_UNDERLINE.match(following) and len(following) >= len(line.rstrip()):
            current = sections.setdefault(line.strip(), [])
            index += 2
            continue
        if not _HEADING_UNDERLINE.match(line):
            current.append(line)
        index += 1
    return {title: "\n".join(body) + "\n" for title, body in sections.items()}


def plain(text: str) -> str:
    """The words of reStructuredText source with escapes and line breaks removed."""
    return " ".join(text.replace("\\", "").split())


def options_ids(option: Option) -> str:
    return f"[{option.section}] {option.key}"


@pytest.fixture(scope="module")
def man8_options() -> str:
    sections = split_rst_sections(MAN8.read_text(encoding="utf-8"))
    return "".join(body for title, body in sections.items() if title.startswith("Options of the"))


@pytest.fixture(scope="module")
def man5_sections() -> dict[str, str]:
    return split_rst_sections(MAN5.read_text(encoding="utf-8"))


@pytest.mark.parametrize("option", OPTIONS, ids=options_ids)
def test_pirsyncd_8_documents_option(option: Option, man8_options: str) -> None:
    assert re.search(rf"^\*\*{re.escape(option.flag)}\*\*", man8_options, re.MULTILINE), (
        f"{MAN8.name}: add **{option.flag}** under 'Options of the ``[{option.section}]`` section'")
    assert plain(option.help) in plain(man8_options), (
        f"{MAN8.name}: the description of {option.flag} must contain its help from options.py: "
        f"{option.help!r}")


@pytest.mark.parametrize("option", OPTIONS, ids=options_ids)
def test_pirsyncd_conf_5_documents_option(option: Option, man5_sections: dict[str, str]) -> None:
    section_text = man5_sections.get(f"[{option.section}]")
    assert section_text is not None, f"{MAN5.name}: add a section heading [{option.section}]"
    assert re.search(rf"^\*\*{re.escape(option.key)}\*\* = ", section_text, re.MULTILINE), (
        f"{MAN5.name}: add **{option.key}** = *type* under [{option.section}]")
    assert plain(option.help) in plain(section_text), (
        f"{MAN5.name}: the description of {option.key} must contain its help from options.py: "
        f"{option.help!r}")


def test_man_pages_document_no_unknown_option(man8_options: str, man5_sections: dict[str, str]) -> None:
    known_flags = {option.flag for option in OPTIONS}
    documented_flags = set(re.findall(r"^\*\*(--[a-z0-9-]+)\*\*", man8_options, re.MULTILINE))
    assert documented_flags - known_flags == set(), f"{MAN8.name} documents options not in options.py"

    documented_sections = {title[1:-1] for title in man5_sections if re.fullmatch(r"\[\w+\]", title)}
    assert documented_sections == set(SECTIONS), f"{MAN5.name}: sections differ from options.py"
    for section in SECTIONS:
        known_keys = {option.key for option in OPTIONS if option.section == section}
        documented_keys = set(re.findall(r"^\*\*(\w+)\*\* = ", man5_sections[f"[{section}]"], re.MULTILINE))
        assert documented_keys == known_keys, f"{MAN5.name}: keys of [{section}] differ from options.py"


def example_conf_keys() -> dict[str, set[str]]:
    """Section -> keys set or shown commented out (``#key = value``) in example.conf."""
    keys: dict[str, set[str]] = {}
    section = ""
    for line in EXAMPLE_CONF.read_text(encoding="utf-8").splitlines():
        heading = re.fullmatch(r"\s*\[(\w+)\]\s*", line)
        if heading:
            section = heading[1]
            keys.setdefault(section, set())
            continue
        setting = re.fullmatch(r"[#;]?\s*(\w+)\s*=.*", line)
        if setting and section:
            keys[section].add(setting[1])
    return keys


@pytest.mark.skipif(not EXAMPLE_CONF.exists(), reason="etc/pirsyncd/example.conf not written yet")
@pytest.mark.parametrize("option", OPTIONS, ids=options_ids)
def test_example_conf_shows_option(option: Option) -> None:
    keys = example_conf_keys()
    assert option.key in keys.get(option.section, set()), (
        f"{EXAMPLE_CONF.name}: add '#{option.key} = {option.example.splitlines()[0]}' "
        f"under [{option.section}] (pirsyncd.config.parse.render_sample_config() writes the whole file)")


@pytest.mark.skipif(not EXAMPLE_CONF.exists(), reason="etc/pirsyncd/example.conf not written yet")
def test_example_conf_is_valid_ini_with_known_sections() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(EXAMPLE_CONF.read_text(encoding="utf-8"), source=str(EXAMPLE_CONF))
    assert set(parser.sections()) <= set(SECTIONS)
    unknown = {key for section, keys in example_conf_keys().items() for key in keys} - {
        option.key for option in OPTIONS}
    assert unknown == set(), f"{EXAMPLE_CONF.name} shows keys not in options.py: {sorted(unknown)}"


def _entry(text: str, start: str, next_entry: str) -> str:
    """The words of one option's entry: from ``start`` to the next line matching ``next_entry``."""
    tail = text[text.index(start) + len(start):]
    following = re.search(next_entry, tail, re.MULTILINE)
    return plain(tail[:following.start()] if following else tail)


@pytest.mark.parametrize("option", OPTIONS, ids=options_ids)
def test_man_pages_give_the_range_of_a_number_from_the_table(option: Option, man8_options: str,
                                                            man5_sections: dict[str, str]) -> None:
    entries = {MAN8.name: _entry(man8_options, f"**{option.flag}**", r"^\*\*--"),
               MAN5.name: _entry(man5_sections[f"[{option.section}]"], f"**{option.key}** = ", r"^\*\*\w+\*\* = ")}
    for page, entry in entries.items():
        if option.bounds is None:
            assert "Allowed:" not in entry, f"{page}: {option.key} has no bounds in options.py"
        else:
            assert f"Allowed: {option.bounds.describe()}." in entry, (
                f"{page}: end the entry of {option.key} with 'Allowed: {option.bounds.describe()}.'")


@pytest.mark.parametrize("option", [option for option in OPTIONS if option.default_text()], ids=options_ids)
def test_man_pages_give_the_default_of_the_table(option: Option, man8_options: str,
                                                 man5_sections: dict[str, str]) -> None:
    """The default the sample config shows (``#delay = 1``) is the one both man pages give."""
    man5 = _entry(man5_sections[f"[{option.section}]"], f"**{option.key}** = ", r"^\*\*\w+\*\* = ")
    man8 = _entry(man8_options, f"**{option.flag}**", r"^\*\*--")
    assert f"Default: ``{option.default_text()}``." in man5, (
        f"{MAN5.name}: the entry of {option.key} must say 'Default: ``{option.default_text()}``.'")
    assert f"default: ``{option.default_text()}``" in man8, (
        f"{MAN8.name}: the entry of {option.flag} must say 'default: ``{option.default_text()}``'")
