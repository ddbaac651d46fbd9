"""A generic Flight SQL client: plain `pyarrow.flight` with GetFlightInfo then DoGet, as ADBC,
JDBC or Grafana do, and the read-only refusal."""

import pyarrow
import pyarrow.flight as flight
import pytest
from google.protobuf import any_pb2
from micromegas.flightsql import FlightSql_pb2

from conftest import as_strings, cli_rows


def command(sql):
    any_ = any_pb2.Any()
    any_.Pack(FlightSql_pb2.CommandStatementQuery(query=sql))
    return flight.FlightDescriptor.for_command(any_.SerializeToString())


def test_get_flight_info_then_do_get(uri, pid):
    sql = (
        f"SELECT name, count(*) AS n FROM async_events('{pid}') "
        "WHERE event_type = 'end' GROUP BY name ORDER BY name"
    )
    conn = flight.connect(uri)
    info = conn.get_flight_info(command(sql))
    assert info.schema.names == ["name", "n"]
    assert len(info.endpoints) == 1
    table = conn.do_get(info.endpoints[0].ticket).read_all()
    assert table.schema == info.schema
    _, rows = cli_rows(sql)
    assert as_strings(table.to_pandas()) == rows


def test_writes_are_refused(uri):
    conn = flight.connect(uri)
    for sql in [
        "CREATE TABLE t AS SELECT 1",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/async-events-refused.csv'",
    ]:
        # pyarrow raises ArrowInvalid for the InvalidArgument status.
        with pytest.raises(pyarrow.lib.ArrowInvalid, match="not supported") as error:
            conn.get_flight_info(command(sql))
        assert "invalid argument" in str(error.value), (sql, str(error.value))
