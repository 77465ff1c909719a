"""The one site-local file: `fl` and `inference` sections (cardiolora.site_file)."""

import json
from pathlib import Path

import pytest

from cardiolora.fl.site_config import _SITE_FIELDS
from cardiolora.site.command import segment_options
from cardiolora.site_file import read_section

EXAMPLE = Path(__file__).resolve().parents[1] / "inference" / "site_config.example.json"


def _write(tmp_path, content):
    path = tmp_path / "cardiolora_site.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_sections_are_read_apart(tmp_path):
    path = _write(
        tmp_path, {"_comment": "x", "fl": {"output_dir": "o", "comment": "y"}, "inference": {"profile": "paper"}}
    )
    assert read_section(path, "fl") == {"output_dir": "o"}
    assert read_section(path, "inference") == {"profile": "paper"}
    only_fl = _write(tmp_path, {"fl": {"output_dir": "o"}})
    assert read_section(only_fl, "inference") == {}


def test_a_flat_file_is_the_asked_section(tmp_path):
    path = _write(tmp_path, {"dataset_dir": "d", "output_dir": "o", "_comment": "old layout"})
    assert read_section(path, "fl") == {"dataset_dir": "d", "output_dir": "o"}
    assert read_section(path, "inference") == {"dataset_dir": "d", "output_dir": "o"}


@pytest.mark.parametrize(
    "content, message",
    [
        ("{oops", r"cardiolora_site.json: cannot read it as JSON"),
        ("[1, 2]", r"cardiolora_site.json: expected a JSON object, got list"),
        ({"fl": [], "inference": {}}, r"section `fl` must be a JSON object, got list"),
        ({"fl": {}, "model": "m.pt"}, r"keys \['model'\] sit beside the sections"),
    ],
    ids=["bad_json", "not_object", "section_not_object", "stray_key"],
)
def test_bad_files_name_the_file_and_the_reason(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        read_section(_write(tmp_path, content), "fl")


def test_unknown_section_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="`section` must be one of"):
        read_section(_write(tmp_path, {}), "inferenc")
    with pytest.raises(ValueError, match="absent.json: cannot read it as JSON"):
        read_section(tmp_path / "absent.json", "fl")


def test_the_shipped_example_has_both_sections_with_known_keys():
    fl, inference = read_section(EXAMPLE, "fl"), read_section(EXAMPLE, "inference")
    assert fl and set(fl) <= _SITE_FIELDS
    options = segment_options()
    assert inference and set(inference) <= {k for k, d in options.items() if not d.get("positional")}
