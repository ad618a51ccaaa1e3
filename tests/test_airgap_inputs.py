"""What prefetch, bundle export and check read: go.sum, go.mod require lines, module lists, -upstream off."""

from __future__ import annotations

from pathlib import Path

import pytest

from goproxy import configload as cfg
from goproxy.airgap.gosum import InputError, Wants, parse_gomod, parse_gosum, parse_module_list, read_inputs
from goproxy.errors import ConfigError

H1 = "h1:" + "A" * 43 + "="
H2 = "h1:" + "B" * 43 + "="


def wanted(w: Wants) -> list[tuple[str, str, bool, str, str]]:
    return [(x.module, x.version, x.zip, x.zip_hash, x.mod_hash) for x in w]


@pytest.mark.parametrize("text,want", [
    (f"rsc.io/quote v1.5.2 {H1}\nrsc.io/quote v1.5.2/go.mod {H2}\n",
     [("rsc.io/quote", "v1.5.2", True, H1, H2)]),
    (f"rsc.io/sampler v1.3.0/go.mod {H2}\n", [("rsc.io/sampler", "v1.3.0", False, "", H2)]),
    (f"\n\nrsc.io/quote v1.5.2 {H1}\n\n", [("rsc.io/quote", "v1.5.2", True, H1, "")]),
    (f"a.example/m v0.0.0-20170915032832-14c0d48ead0c/go.mod {H1}\nb.example/n v2.0.0+incompatible {H2}\n",
     [("a.example/m", "v0.0.0-20170915032832-14c0d48ead0c", False, "", H1),
      ("b.example/n", "v2.0.0+incompatible", True, H2, "")]),
], ids=["zip-and-mod", "mod-only", "blank-lines", "pseudo-and-incompatible"])
def test_gosum_lines_become_wants(text: str, want: list[tuple[str, str, bool, str, str]]) -> None:
    w = Wants()
    parse_gosum(text, w)
    assert wanted(w) == want


@pytest.mark.parametrize("text,words", [
    ("rsc.io/quote v1.5.2\n", ["go.sum:1", "malformed"]),
    ("rsc.io/quote v1.5.2 h2:abc\n", ["go.sum:1", "h2:abc"]),
    (f"rsc.io/quote 1.5.2 {H1}\n", ["go.sum:1", "version"]),
    (f"Rsc.io/quote v1.5.2 {H1}\n", ["go.sum:1", "Rsc.io"]),
    (f"rsc.io/quote v1.5.2 {H1}\nrsc.io/quote v1.5.2 {H2}\n", ["go.sum:2", "two different hashes"]),
], ids=["two-fields", "unknown-hash", "bad-version", "bad-path", "contradiction"])
def test_malformed_gosum_names_the_line(text: str, words: list[str]) -> None:
    with pytest.raises(InputError) as exc:
        parse_gosum(text, Wants())
    for word in words:
        assert word in str(exc.value)


GOMOD = """module example.com/app // the app

go 1.21

require rsc.io/quote v1.5.2

require (
	example.com/version v1.1.0 // indirect
	"golang.org/x/text" v0.3.0
	`example.net/pkgadded` v1.2.0
)

replace (
	example.com/old v1.0.0 => example.com/new v1.0.0
)

exclude example.com/version v1.0.1
tool example.com/cmd
"""


def test_gomod_require_lines_single_and_in_blocks_quoted_or_not() -> None:
    w = Wants()
    parse_gomod(GOMOD, w)
    assert [(x.module, x.version, x.zip) for x in w] == [
        ("example.com/version", "v1.1.0", True), ("example.net/pkgadded", "v1.2.0", True),
        ("golang.org/x/text", "v0.3.0", True), ("rsc.io/quote", "v1.5.2", True)]


@pytest.mark.parametrize("text", ["require rsc.io/quote\n", "require (\n\trsc.io/quote v1 extra\n)\n",
                                  "require rsc.io/quote latest\n"], ids=["no-version", "three-words", "query"])
def test_malformed_require_lines_are_errors(text: str) -> None:
    with pytest.raises(InputError, match="go.mod:"):
        parse_gomod(text, Wants())


def test_module_list_skips_comments_and_blanks() -> None:
    w = Wants()
    parse_module_list("# carried in March\nrsc.io/quote@v1.5.2  # the greeting\n\n// more\n"
                      "golang.org/x/text@v0.3.0\n", w)
    assert [x.name for x in w] == ["golang.org/x/text@v0.3.0", "rsc.io/quote@v1.5.2"]


@pytest.mark.parametrize("line", ["rsc.io/quote", "rsc.io/quote@", "@v1.0.0", "rsc.io/quote@master"],
                         ids=["no-at", "no-version", "no-module", "branch"])
def test_module_list_lines_must_be_module_at_canonical_version(line: str) -> None:
    with pytest.raises(InputError, match="list:1"):
        parse_module_list(line + "\n", Wants())


def test_arguments_are_recognised_by_file_name_or_as_module_at_version(tmp_path: Path) -> None:
    (tmp_path / "go.sum").write_text(f"rsc.io/quote v1.5.2 {H1}\n")
    (tmp_path / "go.mod").write_text("module x.example/app\nrequire rsc.io/sampler v1.3.0\n")
    (tmp_path / "carry.txt").write_text("golang.org/x/text@v0.3.0\n")
    w = read_inputs([str(tmp_path / "go.sum"), str(tmp_path / "go.mod"), str(tmp_path / "carry.txt"),
                     "example.com/version@v1.1.0"])
    assert [x.name for x in w] == ["example.com/version@v1.1.0", "golang.org/x/text@v0.3.0",
                                   "rsc.io/quote@v1.5.2", "rsc.io/sampler@v1.3.0"]
    quote = w.get("rsc.io/quote", "v1.5.2")
    assert quote is not None
    assert quote.zip_hash == H1


def test_a_missing_file_that_is_no_module_at_version_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_inputs([str(tmp_path / "go.sum")])


@pytest.mark.parametrize("value,want", [("off", ("off",)), ("OFF", ("off",)), (" off ", ("off",)),
                                        ("http://a.example,https://b.example", ("http://a.example", "https://b.example"))],
                         ids=["off", "upper", "spaces", "urls"])
def test_upstream_off_is_accepted(value: str, want: tuple[str, ...]) -> None:
    c = cfg.build(None, {}, {"upstream": value})
    assert c.upstreams == want
    assert c.offline == (want == ("off",))


def test_upstream_off_cannot_be_mixed_with_urls() -> None:
    with pytest.raises(ConfigError, match="cannot be combined"):
        cfg.build(None, {}, {"upstream": "off,https://proxy.golang.org"})
