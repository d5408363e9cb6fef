"""Row-level parsing and validation on tiny frames (include/etl/parse.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from include.etl.parse import InputFileError, check_header, empty_parsed, parse_frame
from include.etl.schemas import ATHLETES, REGIONS, VENUES

GOOD = {
    "ID": "1", "Name": "A Dijiang", "Sex": "M", "Age": "24", "Height": "180", "Weight": "80", "Team": "China",
    "NOC": "CHN", "Games": "1992 Summer", "Year": "1992", "Season": "Summer", "City": "Barcelona",
    "Sport": "Basketball", "Event": "Basketball Men's Basketball", "Medal": "NA",
}


def athletes(*changes: dict) -> pd.DataFrame:
    return pd.DataFrame([{**GOOD, **c} for c in changes], dtype=str)


def test_good_row_is_typed_and_na_becomes_null():
    out = parse_frame(athletes({}, {"Age": "NA", "Height": "NA", "Medal": "Gold"}), ATHLETES, "f.csv")
    assert out["_reason"].isna().all()
    assert out.loc[0, "ID"] == 1 and out.loc[0, "Age"] == 24 and out.loc[0, "Height"] == 180.0
    assert pd.isna(out.loc[0, "Medal"]) and out.loc[1, "Medal"] == "Gold"
    assert pd.isna(out.loc[1, "Age"]) and pd.isna(out.loc[1, "Height"])
    assert str(out["Age"].dtype) == "Int64" and str(out["Height"].dtype) == "Float64"
    assert out["_raw"].isna().all()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"Age": "abc"}, "Age is not a number"),
        ({"Age": "24.5"}, "Age is not a whole number"),
        ({"Age": "121"}, "Age outside [0, 120]"),
        ({"Age": "-1"}, "Age outside [0, 120]"),
        ({"Sex": "X"}, "Sex not in M/F"),
        ({"Season": "Spring"}, "Season not in Summer/Winter"),
        ({"Medal": "Platinum"}, "Medal not in Gold/Silver/Bronze"),
        ({"ID": "NA"}, "missing required ID"),
        ({"NOC": ""}, "missing required NOC"),
        ({"Year": "NA"}, "missing required Year"),
    ],
)
def test_bad_values_are_rejected_with_reason_and_raw_line(change, reason):
    out = parse_frame(athletes({}, change), ATHLETES, "athletes.csv")
    assert out["_reason"].isna().tolist() == [True, False]
    assert out.loc[1, "_reason"] == reason
    assert out.loc[1, "_source"] == "athletes.csv"
    raw = out.loc[1, "_raw"]
    assert ",A Dijiang," in raw and f",{list(change.values())[0]}," in f",{raw},"


def test_first_reason_wins_and_line_numbers_are_kept():
    raw = athletes({"ID": "NA", "Age": "abc"}).assign(_line=[7])
    out = parse_frame(raw, ATHLETES, "f")
    assert out.loc[0, "_reason"] == "missing required ID" and out.loc[0, "_line"] == 7


def test_duplicate_keys_of_reference_tables_are_rejected_not_dropped():
    raw = pd.DataFrame({"NOC": ["SGP", "CHN", "SGP"], "region": ["Singapore", "China", "Other"], "notes": ["", "", ""]})
    out = parse_frame(raw, REGIONS, "noc_regions.csv")
    assert out["_reason"].iloc[:2].isna().all()
    assert out.loc[2, "_reason"] == "duplicate key (NOC)"
    assert len(out) == 3


def test_na_region_is_null_and_venue_bounds_checked():
    out = parse_frame(pd.DataFrame({"NOC": ["ROT"], "region": ["NA"], "notes": ["Refugee Olympic Team"]}), REGIONS, "r")
    assert pd.isna(out.loc[0, "region"]) and out.loc[0, "notes"] == "Refugee Olympic Team"
    venues = pd.DataFrame({"Year": ["1896", "1900"], "Season": ["Summer", "Summer"], "City": ["Athina", "Paris"],
                           "lon": ["23.7", "200"], "lat": ["37.9", "48.8"]})
    out = parse_frame(venues, VENUES, "v")
    assert out["_reason"].tolist()[1] == "lon outside [-180, 180]"


def test_empty_parsed_matches_parse_frame_dtypes():
    out = parse_frame(athletes({}), ATHLETES, "f")
    assert list(out.columns) == list(empty_parsed(ATHLETES).columns)
    assert (out.dtypes == empty_parsed(ATHLETES).dtypes).all()


def test_check_header_names_file_and_columns(tmp_path):
    ok = tmp_path / "ok.csv"
    ok.write_text("NOC,region,notes\rAFG,Afghanistan,\r")  # bare CR, as published
    assert check_header(str(ok), REGIONS) == ["NOC", "region", "notes"]

    with pytest.raises(InputFileError, match=r"missing\.csv: file does not exist"):
        check_header(str(tmp_path / "missing.csv"), REGIONS)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputFileError, match=r"empty\.csv: file is empty"):
        check_header(str(empty), REGIONS)
    renamed = tmp_path / "renamed.csv"
    renamed.write_text("NOC,Region,notes\n")
    with pytest.raises(InputFileError, match=r"missing required columns \['region'\]; found columns \['NOC', 'Region', 'notes'\]"):
        check_header(str(renamed), REGIONS)
    semi = tmp_path / "semi.csv"
    semi.write_text("NOC;region;notes\n")
    with pytest.raises(InputFileError, match="looks ';'-delimited"):
        check_header(str(semi), REGIONS)
