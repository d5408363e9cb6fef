"""Dataset contracts: a wrong declaration fails when it is built, naming the dataset and the column or rule."""

from __future__ import annotations

import pytest

from include.etl.contract import Column, Dataset, FileFormat, Rule, load_datasets, on_partition_day, weekday_of, year_of
from include.etl.errors import ContractError, DataError


def test_a_valid_contract_builds_and_describes_its_rules():
    ds = Dataset(
        "trade",
        (Column("Year", "int", required=True), Column("Date", "date", format="%d/%m/%Y"), Column("Weekday")),
        rules=(year_of("Year", "Date"), weekday_of("Weekday", "Date")),
    )
    assert ds.names == ("Year", "Date", "Weekday")
    assert ds.columns[0].type == "integer"  # alias
    assert [r.name for r in ds.rules] == ["Year is the year of Date", "Weekday is the day name of Date"]
    assert ds.required == ("Year",)
    assert not ds.whole_file


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"columns": [{"name": "a", "type": "blob"}]}, "column 'a': unknown type 'blob'"),
        ({"columns": [{"name": "a", "type": "date"}]}, "column 'a': a date needs a strptime format"),
        ({"columns": [{"name": "a", "type": "date", "format": "%Q-%m"}]}, "unknown directives ['Q']"),
        ({"columns": [{"name": "a", "type": "date", "format": "%Y-%m"}]}, "has no day directive"),
        ({"columns": [{"name": "a", "type": "decimal", "precision": 5}]}, "column 'a': decimal needs precision"),
        ({"columns": [{"name": "a", "type": "string", "range": [0, 1]}]}, "range is only for numbers"),
        ({"columns": [{"name": "a", "type": "integer", "range": [5, 1]}]}, "range low 5 is above high 1"),
        ({"columns": [{"name": "a", "type": "float", "whole_float": True}]}, "whole_float is only for integers"),
        ({"columns": [{"name": "a", "type": "integer", "thousands": "12"}]}, "thousands separator '12'"),
        ({"columns": [{"name": "a", "type": "boolean", "true_values": ["y"], "false_values": ["Y"]}]},
         "distinct true and false tokens"),
        ({"columns": [{"name": "a"}, {"name": "a"}]}, "column 'a': declared twice"),
        ({"columns": [{"name": "_line"}]}, "reserved for the reject bookkeeping"),
        ({"columns": [{"name": "a", "colour": "red"}]}, "column a has unknown keys ['colour']"),
        ({"columns": [{"name": "a"}], "rules": [{"kind": "year_of", "column": "a", "of": "zz"}]},
         "names unknown column 'zz'"),
        ({"columns": [{"name": "a"}], "rules": [{"kind": "moon_phase", "column": "a"}]}, "unknown rule kind 'moon_phase'"),
        ({"columns": [{"name": "a"}], "rules": [{"kind": "on_partition_day", "column": "a"}]},
         "column 'a' must be a date or timestamp"),
        ({"columns": [{"name": "a"}], "key": ["b"]}, "key names unknown column 'b'"),
        ({"columns": [{"name": "a"}], "format": {"encoding": "utf-16"}}, "encoding 'utf-16' is not supported"),
        ({"columns": [{"name": "a"}], "format": {"delimiter": ";;"}}, "delimiter must be one ASCII character"),
        ({"columns": []}, "declares no columns"),
    ],
)
def test_a_wrong_contract_fails_naming_the_dataset_and_the_column(spec, message):
    with pytest.raises(ContractError) as err:
        Dataset.from_dict({"name": "bad_input", **spec})
    assert "'bad_input'" in str(err.value)
    assert message in str(err.value)
    assert isinstance(err.value, DataError)  # a data error: never retried


def test_contracts_load_from_yaml(tmp_path):
    path = tmp_path / "datasets.yaml"
    path.write_text(
        "- name: lines\n"
        "  format: {encoding: latin1, null_values: ['']}\n"
        "  columns:\n"
        "    - {name: When, type: timestamp, format: '%Y-%m-%d %H:%M:%S', required: true}\n"
        "    - {name: Price, type: decimal, precision: 10, scale: 2, range: [0, null]}\n"
        "  rules: [{kind: on_partition_day, column: When}]\n"
    )
    (lines,) = load_datasets(path).values()
    assert lines.format == FileFormat(encoding="latin-1", null_values=("",))
    assert lines.by_name["Price"].range == (0, None)
    assert lines.rules == (on_partition_day("When"),)
    path.write_text("- name: lines\n  columns: [{name: When, type: timestamp}]\n")
    with pytest.raises(ContractError, match=r"datasets.yaml: dataset 'lines', column 'When': a timestamp needs"):
        load_datasets(path)


def test_rule_kinds_check_column_types():
    cols = (Column("Y", "string"), Column("D", "date", format="%Y-%m-%d"))
    with pytest.raises(ContractError, match="column 'Y' must be an integer"):
        Dataset("x", cols, rules=(Rule("year_of", "Y", "D"),))
    Dataset("x", cols, rules=(Rule("weekday_of", "Y", "D", name="Y names the day"),))
