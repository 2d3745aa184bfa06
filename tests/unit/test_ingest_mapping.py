"""The mapping itself: presets load, and a bad mapping fails with a message naming the key."""

from __future__ import annotations

import pytest
import yaml

from ml.ingest import PRESETS, IngestError, load_mapping


def test_every_preset_loads():
    assert set(PRESETS) == {"online_retail_ii", "rees46", "retailrocket", "movielens_atomic", "erp_demand"}
    for name in PRESETS:
        mapping = load_mapping(name)
        assert mapping.name == name
        assert mapping.produces


def _write(tmp_path, data) -> str:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BASE = {
    "columns": {"user_id": "u", "item_id": "i", "timestamp": "t", "session_id": "s"},
    "produces": ["events"],
}


def test_mapping_from_yaml_path_takes_file_stem_as_name(tmp_path):
    mapping = load_mapping(_write(tmp_path, BASE))
    assert mapping.name == "m"


def test_unknown_top_level_key_is_named(tmp_path):
    with pytest.raises(IngestError, match=r"unknown key 'colums'"):
        load_mapping(_write(tmp_path, {**BASE, "colums": {}}))


def test_unknown_nested_key_is_named(tmp_path):
    with pytest.raises(IngestError, match=r"unknown key 'timestamp.zone'"):
        load_mapping(_write(tmp_path, {**BASE, "timestamp": {"zone": "UTC"}}))


def test_unknown_field_name_is_refused(tmp_path):
    with pytest.raises(IngestError, match=r"columns.customer"):
        load_mapping(_write(tmp_path, {**BASE, "columns": {**BASE["columns"], "customer": "c"}}))


def test_unknown_table_unknown_zone_and_bad_event_map(tmp_path):
    with pytest.raises(IngestError, match="unknown lake table"):
        load_mapping({**BASE, "name": "x", "produces": ["clicks"]})
    with pytest.raises(IngestError, match="unknown time zone"):
        load_mapping({**BASE, "name": "x", "timestamp": {"timezone": "Mars/Olympus"}})
    with pytest.raises(IngestError, match="not in"):
        load_mapping({**BASE, "name": "x", "value_maps": {"event_type": {"cart": "basket"}}})


def test_inconsistent_mappings_are_refused():
    with pytest.raises(IngestError, match="orders_from"):
        load_mapping({**BASE, "name": "x", "produces": ["orders"]})
    with pytest.raises(IngestError, match="session"):
        load_mapping({"name": "x", "columns": {"user_id": "u", "timestamp": "t"}, "produces": ["events"]})
    with pytest.raises(IngestError, match="user_from_session"):
        load_mapping(
            {
                "name": "x",
                "columns": {"timestamp": "t", "item_id": "i"},
                "session": {"method": "inactivity"},
                "user_from_session": True,
                "produces": ["events"],
            }
        )


def test_neither_preset_nor_file():
    with pytest.raises(IngestError, match="neither a preset"):
        load_mapping("no_such_preset")
