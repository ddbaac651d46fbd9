"""The Perfetto traces of the crate, read with Perfetto's own message definitions (the generated
`perfetto_trace_pb2` of the `perfetto` package) rather than the crate's decoder, so that a wrong
field number or type in the writer cannot be written and read back consistently.

Three traces of the recorded generator: `async-events trace` of the whole process, the same
with `--begin`/`--end` over the middle third of the recording, and the concatenated
`chunk_data` of `perfetto_trace_chunks`. Each is checked against `async_spans`,
`thread_streams` and `processes` on the same lake, and against the layout that the writer's
module doc (src/timeline/perfetto/writer.rs) describes."""

import os
from collections import Counter, defaultdict
from dataclasses import dataclass

import pytest
from google.protobuf.unknown_fields import UnknownFieldSet
from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace, TracePacket, TrackEvent

from conftest import COUNTS, cli, sql

SLICE_BEGIN = TrackEvent.Type.Value("TYPE_SLICE_BEGIN")
SLICE_END = TrackEvent.Type.Value("TYPE_SLICE_END")
STATE_CLEARED = TracePacket.SequenceFlags.Value("SEQ_INCREMENTAL_STATE_CLEARED")
NEEDS_STATE = TracePacket.SequenceFlags.Value("SEQ_NEEDS_INCREMENTAL_STATE")
# The marks of the writer's module doc for spans whose end or begin is not known.
UNFINISHED = " [unfinished]"
OPEN_AT_END = " [open at range end]"
BEGAN_BEFORE = " [began before range]"
MARKS = (UNFINISHED, OPEN_AT_END, BEGAN_BEFORE)
# The generator records thousands of spans (600 jobs); a trace with fewer slices than this
# lost most of them.
MIN_SLICES = 300


def unknown_fields(message, path="Trace"):
    """Every field of `message` and of its known sub-messages, recursively, that the
    definitions do not know (number or wire type): (path, field number, wire type)."""
    found = [(path, f.field_number, f.wire_type) for f in UnknownFieldSet(message)]
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name["value"]
            items = list(value.values()) if entry.message_type is not None else []
        elif field.is_repeated:
            items = list(value)
        else:
            items = [value]
        for i, item in enumerate(items):
            where = f"{path}.{field.name}[{i}]" if field.is_repeated else f"{path}.{field.name}"
            found += unknown_fields(item, where)
    return found


def test_unknown_fields_are_detected():
    """The check finds a field the definitions lack at any depth, a value outside a closed
    enum, and a known number written with another wire type; and nothing in a clean message."""
    clean = Trace()
    packet = clean.packet.add(timestamp=5, trusted_packet_sequence_id=1)
    packet.track_event.name = "x"
    packet.track_event.type = SLICE_BEGIN
    packet.track_event.debug_annotations.add(name="depth", int_value=1)
    data = clean.SerializeToString()
    assert unknown_fields(Trace.FromString(data)) == []

    def nested(event):
        """A trace whose one packet holds a track event of these bytes (each under 128)."""
        packet = bytes([0x5A, len(event)]) + event  # TracePacket.track_event = 11, LEN
        return Trace.FromString(bytes([0x0A, len(packet)]) + packet)  # Trace.packet = 1, LEN

    # Field 999 as a varint (tag 999 << 3 | 0 = 0xB8 0x3E), next to a real name (field 23).
    name = bytes([0xBA, 0x01, 0x01]) + b"x"
    assert unknown_fields(nested(name + bytes([0xB8, 0x3E, 0x05]))) == [
        ("Trace.packet[0].track_event", 999, 0)
    ]
    # `type` (field 9) = 99: not a TrackEvent.Type.
    assert unknown_fields(nested(bytes([0x48, 99]))) == [("Trace.packet[0].track_event", 9, 0)]
    # `name` (field 23) as a varint instead of a string.
    assert unknown_fields(nested(bytes([0xB8, 0x01, 0x05]))) == [
        ("Trace.packet[0].track_event", 23, 0)
    ]
    # Inside a debug annotation (field 4), 3 levels down: field 15 is not a DebugAnnotation's.
    annotation = bytes([0x78, 0x01])
    assert unknown_fields(nested(bytes([0x22, len(annotation)]) + annotation)) == [
        ("Trace.packet[0].track_event.debug_annotations[0]", 15, 0)
    ]


@dataclass
class Case:
    """A trace and what it is compared with."""

    label: str
    data: bytes
    trace: Trace
    # The arguments of async_spans for the same process and range.
    args: str
    # Rows of async_spans with the same arguments (span_id, name, depth, begin and end in ns,
    # begin_stream_id, finished; NULL columns left out).
    spans: list
    # The range (ns) of --begin/--end, None for the whole process.
    bounds: tuple


def span_rows(args):
    return sql(
        'SELECT span_id, name, depth, CAST(begin AS BIGINT) AS begin, CAST("end" AS BIGINT) '
        f'AS "end", begin_stream_id, finished FROM async_spans({args})'
    )


def chunks(pid):
    """The concatenated chunk_data of perfetto_trace_chunks (the CLI prints Binary as hex)."""
    rows = sql(
        f"SELECT chunk_id, chunk_data FROM perfetto_trace_chunks('{pid}', 'async') "
        "ORDER BY chunk_id"
    )
    assert [r["chunk_id"] for r in rows] == list(range(len(rows)))
    return b"".join(bytes.fromhex(r["chunk_data"]) for r in rows)


@pytest.fixture(scope="session", params=["whole", "range", "chunks"])
def case(request, pid, middle, tmp_path_factory):
    out = tmp_path_factory.mktemp("trace") / f"{request.param}.pftrace"
    bounds = None
    args = f"'{pid}'"
    if request.param == "whole":
        cli("trace", "--process", pid, "--span-types", "async", "-o", str(out))
        data = out.read_bytes()
    elif request.param == "range":
        begin, end, begin_text, end_text = middle
        cli(
            "trace", "--process", pid, "--span-types", "async",
            "--begin", begin_text, "--end", end_text, "-o", str(out),
        )
        data = out.read_bytes()
        bounds = (begin, end)
        args = f"'{pid}', '{begin_text}', '{end_text}'"
    else:
        data = chunks(pid)
    return Case(request.param, data, Trace.FromString(data), args, span_rows(args), bounds)


def test_the_trace_command_writes_the_chunks(pid, tmp_path):
    out = tmp_path / "whole.pftrace"
    cli("trace", "--process", pid, "--span-types", "async", "-o", str(out))
    assert out.read_bytes() == chunks(pid)


def test_both_adds_each_threads_scopes(pid, tmp_path):
    """The default trace (`both`): the async slices of the `async` trace, plus one slice per
    thread scope of `thread_spans` on a `scopes` track under its thread's track, nested as the
    thread's call stack was: a slice's depth is the number of slices of its track around it."""
    out = tmp_path / "both.pftrace"
    cli("trace", "--process", pid, "-o", str(out))
    data = out.read_bytes()
    trace = Trace.FromString(data)
    assert unknown_fields(trace) == []
    assert trace.SerializeToString() == data
    by_uuid = tracks(trace)
    found = slices(trace)
    on_thread = [s for s in found if by_uuid[s.track][0].name == "scopes"]
    on_async = [s for s in found if by_uuid[s.track][0].name.startswith("depth ")]
    assert len(on_thread) + len(on_async) == len(found)
    scopes = sql(
        'SELECT name, depth, CAST(begin AS BIGINT) AS b, CAST("end" AS BIGINT) AS e, '
        f"stream_id FROM thread_spans('{pid}') WHERE depth > 0"
    )
    assert len(scopes) >= 100, len(scopes)
    assert Counter((s.name, s.begin, s.end) for s in on_thread) == Counter(
        (r["name"], r["b"], r["e"]) for r in scopes
    )
    per_track = defaultdict(list)
    for s in on_thread:
        track = by_uuid[s.track][0]
        assert by_uuid[track.parent_uuid][0].HasField("thread"), "not under a thread track"
        per_track[s.track].append(s)
    for slices_of_track in per_track.values():
        for s in slices_of_track:
            def encloses(o):
                if o is s or not (o.begin <= s.begin and s.end <= o.end):
                    return False
                if (o.begin, o.end) != (s.begin, s.end):
                    return True
                # The same times: the outer one is the shallower.
                return o.annotations["depth"] < s.annotations["depth"]

            around = sum(encloses(o) for o in slices_of_track)
            assert around == s.annotations["depth"] - 1, s
    only_async = slices(Trace.FromString(chunks(pid)))
    assert Counter((s.name, s.begin, s.end) for s in on_async) == Counter(
        (s.name, s.begin, s.end) for s in only_async
    )
    COUNTS.append(
        f"both: {len(on_thread)} thread scope slices = thread_spans rows, "
        f"{len(on_async)} async slices = the async trace's"
    )


def test_every_field_is_perfettos(case):
    """Nothing the definitions do not know, and nothing lost: the parsed trace serializes back
    to the same bytes (a field written twice, or two members of a oneof, would not)."""
    assert unknown_fields(case.trace) == []
    assert case.trace.SerializeToString() == case.data
    kinds = Counter(p.WhichOneof("data") for p in case.trace.packet)
    assert set(kinds) == {"track_event", "track_descriptor"}, kinds
    COUNTS.append(
        f"{case.label}: {len(case.data)} bytes, {len(case.trace.packet)} packets "
        f"({kinds['track_descriptor']} track descriptors, {kinds['track_event']} track events), "
        "0 unknown fields, re-serialized identically"
    )


def tracks(trace):
    """Track descriptors by uuid, with the index of their packet; checks that uuids are unique
    and non-zero and that every parent is declared."""
    found = {}
    for i, p in enumerate(trace.packet):
        if p.HasField("track_descriptor"):
            t = p.track_descriptor
            assert t.uuid != 0, f"packet {i}: a track without uuid"
            assert t.uuid not in found, f"track {t.uuid} declared twice"
            found[t.uuid] = (t, i)
    for t, i in found.values():
        if t.HasField("parent_uuid"):
            assert t.parent_uuid in found, f"packet {i}: undeclared parent {t.parent_uuid}"
    return found


def test_tracks_and_sequence(case):
    """Every event is on a declared track (declared before it), every parent is declared; the
    tree is process > threads > `depth N` lanes, slices on lanes only; one packet sequence whose
    first packet clears the incremental state that the others say they need."""
    by_uuid = tracks(case.trace)
    processes = [u for u, (t, _) in by_uuid.items() if t.HasField("process")]
    assert len(processes) == 1, processes
    (process,) = processes
    assert not by_uuid[process][0].HasField("parent_uuid")
    threads = {u for u, (t, _) in by_uuid.items() if t.HasField("thread")}
    lanes = set(by_uuid) - threads - {process}
    for u in threads:
        assert by_uuid[u][0].parent_uuid == process, f"thread track {u} is not under the process"
    for u in lanes:
        t = by_uuid[u][0]
        assert t.parent_uuid in threads, f"lane {u} is not under a thread track"
        assert t.name.startswith("depth ") and t.name[6:].isdigit(), t.name
    used = set()
    for i, p in enumerate(case.trace.packet):
        assert p.trusted_packet_sequence_id == 1, f"packet {i}: another sequence"
        if p.HasField("track_event"):
            assert p.track_event.HasField("track_uuid"), f"packet {i}: no track_uuid"
            u = p.track_event.track_uuid
            assert u in by_uuid, f"packet {i}: event on undeclared track {u}"
            assert by_uuid[u][1] < i, f"packet {i}: event before its track's descriptor"
            assert u in lanes, f"packet {i}: event on track {u}, not a lane"
            used.add(u)
    assert lanes == used, "lanes without slices"
    flags = [p.sequence_flags for p in case.trace.packet]
    assert flags[0] & STATE_CLEARED
    events = [f for f, p in zip(flags, case.trace.packet) if p.HasField("track_event")]
    assert all(f & NEEDS_STATE for f in events)
    COUNTS.append(
        f"{case.label}: 1 process, {len(threads)} thread and {len(lanes)} lane tracks, "
        f"{sum(p.HasField('track_event') for p in case.trace.packet)} events on declared tracks"
    )


@dataclass
class Slice:
    name: str
    begin: int
    end: int
    track: int
    annotations: dict


def slices(trace):
    """The slices of a trace as Perfetto pairs them: per track, events in time order (file
    order at equal times; the writer does not promise time order in the file), each SLICE_END
    closing the innermost open slice; nothing may stay open."""
    per_track = defaultdict(list)
    for i, p in enumerate(trace.packet):
        if p.HasField("track_event"):
            e = p.track_event
            assert p.HasField("timestamp"), f"packet {i}: an event without timestamp"
            assert e.type in (SLICE_BEGIN, SLICE_END), f"packet {i}: type {e.type}"
            per_track[e.track_uuid].append((p.timestamp, i, e))
    out = []
    for track, events in per_track.items():
        events.sort(key=lambda x: (x[0], x[1]))
        stack = []
        for ts, i, e in events:
            if e.type == SLICE_BEGIN:
                assert e.HasField("name"), f"packet {i}: a slice without name"
                stack.append((ts, e))
            else:
                assert stack, f"packet {i}: SLICE_END with no open slice on track {track}"
                begin, b = stack.pop()
                notes = {a.name: getattr(a, a.WhichOneof("value")) for a in b.debug_annotations}
                out.append(Slice(b.name, begin, ts, track, notes))
        assert not stack, f"{len(stack)} slices left open on track {track}"
    return out


def test_slices_balance(case):
    found = slices(case.trace)
    assert len(found) >= MIN_SLICES, len(found)
    COUNTS.append(
        f"{case.label}: {len(found)} slices balanced on "
        f"{len({s.track for s in found})} tracks"
    )


def test_slices_equal_async_spans(case):
    """Finished spans are the unmarked slices, by (name, begin, end); every span is one slice
    whose name, times and annotations follow the writer's module doc."""
    found = slices(case.trace)
    by_uuid = tracks(case.trace)
    # A finished span read without its begin would be marked, hence `begin IS NOT NULL`.
    finished = sql(
        'SELECT name, CAST(begin AS BIGINT) AS b, CAST("end" AS BIGINT) AS e '
        f"FROM async_spans({case.args}) WHERE finished AND begin IS NOT NULL"
    )
    expected = Counter((r["name"], r["b"], r["e"]) for r in finished)
    got = Counter((s.name, s.begin, s.end) for s in found if not any(m in s.name for m in MARKS))
    missing, extra = expected - got, got - expected
    assert got == expected, f"missing {list(missing)[:5]}, extra {list(extra)[:5]}"
    assert len(expected) >= 1 and sum(expected.values()) >= MIN_SLICES

    spans = {r["span_id"]: r for r in case.spans}
    assert len(spans) == len(case.spans), "span ids are not unique"
    ids = Counter(s.annotations.get("span_id") for s in found)
    assert ids == Counter(list(spans)), "not one slice per span"
    last = max(max(r.get("begin", 0), r.get("end", 0)) for r in case.spans)
    marked = Counter()
    for s in found:
        r = spans[s.annotations["span_id"]]
        name = r["name"]
        if "end" not in r:
            name += UNFINISHED if r.get("finished") is False else OPEN_AT_END
        if "begin" not in r:
            name += BEGAN_BEFORE
        assert s.name == name, (s, r)
        for m in MARKS:
            marked[m] += m in s.name
        assert s.begin == r.get("begin", case.bounds[0] if case.bounds else None), (s, r)
        if "end" in r:
            assert s.end == r["end"], (s, r)
        elif case.bounds:
            assert s.end == max(case.bounds[1], s.begin), (s, r)
        else:
            # Drawn to the last time seen so far (the writer streams): within the recording.
            assert s.begin <= s.end <= last, (s, r)
        text = {True: "true", False: "false", None: "unknown"}[r.get("finished")]
        assert s.annotations["finished"] == text, (s, r)
        assert s.annotations["depth"] == r["depth"], (s, r)
        assert by_uuid[s.track][0].name == f"depth {r['depth']}", (s, r)
    never = sum(r.get("finished") is False for r in case.spans)
    assert marked[UNFINISHED] == never
    cut = sum("end" not in r and r.get("finished") is not False for r in case.spans)
    assert marked[OPEN_AT_END] == cut
    assert marked[BEGAN_BEFORE] == sum("begin" not in r for r in case.spans)
    COUNTS.append(
        f"{case.label}: {sum(expected.values())} finished spans = unmarked slices; "
        f"{len(found)} slices = {len(spans)} spans by span_id; "
        f"{marked[UNFINISHED]} [unfinished] ({never} never finished), "
        f"{marked[OPEN_AT_END]} [open at range end], {marked[BEGAN_BEFORE]} [began before range]"
    )


def thread_tracks(case, pid):
    """The thread descriptors by the stream of their spans (a slice's `span_id` gives the
    span's `begin_stream_id`; its lane's parent is the thread track), with the rows of
    thread_streams by stream id; checks one thread track per stream that has spans."""
    by_uuid = tracks(case.trace)
    spans = {r["span_id"]: r for r in case.spans}
    pairs = {
        (spans[s.annotations["span_id"]]["begin_stream_id"], by_uuid[s.track][0].parent_uuid)
        for s in slices(case.trace)
    }
    streams = dict(pairs)
    assert len(streams) == len(pairs), f"a stream's spans on several thread tracks: {pairs}"
    assert len(set(streams.values())) == len(streams), "streams share a thread track"
    assert set(streams) == {r["begin_stream_id"] for r in case.spans}
    declared = {u for u, (t, _) in by_uuid.items() if t.HasField("thread")}
    assert declared == set(streams.values()), "thread tracks without spans"
    rows = {r["stream_id"]: r for r in sql(f"SELECT * FROM thread_streams('{pid}')")}
    return {s: (by_uuid[u][0], rows[s]) for s, u in streams.items()}


def test_process_and_thread_descriptors(case, pid):
    """One process track named after the executable and process id; a thread track per thread
    that has spans, named as thread_streams names the thread of those spans."""
    (process,) = [
        p.track_descriptor for p in case.trace.packet if p.track_descriptor.HasField("process")
    ]
    rows = sql("SELECT process_id, exe FROM processes")
    (exe,) = [r["exe"] for r in rows if r["process_id"] == pid]
    assert process.process.pid > 0
    assert process.name == process.process.process_name
    assert pid in process.name and os.path.basename(exe) in process.name, process.name
    threads = thread_tracks(case, pid)
    for stream, (t, row) in threads.items():
        assert t.thread.pid == process.process.pid, stream
        assert t.thread.thread_name == row["thread_name"] == t.name, (stream, t, row)
    tids = [t.thread.tid for t, _ in threads.values()]
    assert len(set(tids)) == len(tids), tids
    COUNTS.append(
        f"{case.label}: process {process.name!r} (pid {process.process.pid}); "
        f"{len(threads)} thread tracks = {len(threads)} streams with spans, names "
        f"{sorted(Counter(t.thread.thread_name for t, _ in threads.values()).items())}"
    )


def test_thread_ids_are_the_recorded_ones(case, pid):
    """The writer's module doc: a thread track has "the thread's name and id from its stream"."""
    threads = thread_tracks(case, pid)
    got = {s: t.thread.tid for s, (t, _) in threads.items()}
    assert got == {s: int(row["thread_id"]) for s, (_, row) in threads.items()}
