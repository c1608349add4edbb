"""The hand-written protobuf encoder, decoded by protoc-generated classes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import cramjam
import pytest

from exporter.loki import proto
from exporter.loki.encode import encode_entries, parse_labels, protobuf_payload
from exporter.loki.entry import (
    Entry,
    EntryBuilder,
    decode_record,
    encode_record,
    render_labels,
    shrink,
)
from exporter.loki.settings import LokiSettings
from tests.loki_corpus import corpus_events
from tests.loki_receiver import compile_push_proto, parse_selector


@pytest.fixture(scope="session")
def push_pb2(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return compile_push_proto(tmp_path_factory.mktemp("proto"))


TS_CASES = [
    0,
    1,
    999_999_999,
    1_000_000_000,
    1_587_491_825_548_299_000,  # 2020-04-21T17:57:05.548299Z
    1_587_491_825_548_299_123,
    (1 << 62) + 7,
]


def decode(pb2: ModuleType, data: bytes) -> Any:
    msg = pb2.PushRequest()
    msg.ParseFromString(data)
    return msg


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16383, 16384, 2**31, 2**63 - 1, -1, -(2**63)])
def test_varint_matches_protobuf(push_pb2: ModuleType, n: int) -> None:
    # An int64 field (Timestamp.seconds) carries every varint form.
    data = proto.varint_field(1, n)
    ts = push_pb2.google_dot_protobuf_dot_timestamp__pb2.Timestamp()
    ts.ParseFromString(data)
    assert ts.seconds == n


@pytest.mark.parametrize("ts_ns", TS_CASES)
def test_entries_labels_metadata_and_nanoseconds_decode(push_pb2: ModuleType, ts_ns: int) -> None:
    line = '{"kind":"Event","message":"ünïcödé \\" and \\n"}'.encode()
    entries = [
        Entry('{service_name="kube-audit", verb="get"}', ts_ns, line, (("user", "alice"),)),
        Entry('{service_name="kube-audit", verb="get"}', ts_ns + 1, b"", ()),
        Entry(
            '{service_name="kube-audit", verb="list"}',
            ts_ns,
            b"x" * 70_000,
            (("audit_id", "a" * 200), ("code", "200"), ("empty_name_next", "v")),
        ),
    ]
    msg = decode(push_pb2, protobuf_payload(entries))
    assert [s.labels for s in msg.streams] == [
        '{service_name="kube-audit", verb="get"}',
        '{service_name="kube-audit", verb="list"}',
    ]
    got = [
        (
            s.labels,
            e.timestamp.seconds * 1_000_000_000 + e.timestamp.nanos,
            e.line.encode(),
            tuple((p.name, p.value) for p in e.structuredMetadata),
        )
        for s in msg.streams
        for e in s.entries
    ]
    want = [(e.labels, e.ts_ns, e.line, e.metadata) for e in entries]
    assert sorted(got) == sorted(want)


def test_stream_keeps_entry_order(push_pb2: ModuleType) -> None:
    # Out of time order on purpose: the spool's order is the stream's order.
    entries = [Entry('{a="1"}', t, str(t).encode(), ()) for t in (5, 3, 9, 1, 7)]
    msg = decode(push_pb2, protobuf_payload(entries))
    assert [e.line for e in msg.streams[0].entries] == ["5", "3", "9", "1", "7"]


def test_body_is_raw_block_snappy_not_framed(push_pb2: ModuleType) -> None:
    entries = [Entry('{a="1"}', 1, b"line " * 1000, ())]
    body = encode_entries(entries, "protobuf")
    assert body.content_type == "application/x-protobuf"
    assert body.content_encoding is None
    # The framing format starts with a stream identifier chunk (0xff "sNaPpY").
    assert not body.data.startswith(b"\xff\x06\x00\x00sNaPpY")
    raw = bytes(cramjam.snappy.decompress_raw(body.data))
    assert decode(push_pb2, raw).streams[0].entries[0].line == "line " * 1000


def test_json_format_is_gzip_with_structured_metadata() -> None:
    entries = [Entry('{a="x\\"y", b="2"}', 1_587_491_825_548_299_123, b'{"k":1}', (("user", "u"),))]
    body = encode_entries(entries, "json")
    assert (body.content_type, body.content_encoding) == ("application/json", "gzip")
    doc = json.loads(gzip.decompress(body.data))
    assert doc == {
        "streams": [
            {
                "stream": {"a": 'x"y', "b": "2"},
                "values": [["1587491825548299123", '{"k":1}', {"user": "u"}]],
            }
        ]
    }


@pytest.mark.parametrize(
    "value",
    ["plain", 'quo"te', "back\\slash", "new\nline", "tab\t", "bell\x07", "ünï", '{x="y"}', ""],
)
def test_label_string_is_sorted_and_parses_like_loki(value: str) -> None:
    text = render_labels([("verb", "get"), ("cluster", value), ("service_name", "kube-audit")])
    pairs = parse_selector(text)
    names = [k for k, _ in pairs]
    assert names == sorted(names)
    expected = {"verb": "get", "service_name": "kube-audit"}
    if value:
        expected["cluster"] = value
    assert dict(pairs) == expected
    assert parse_labels(text) == expected


def test_spool_record_round_trip() -> None:
    e = Entry('{a="1"}', 1_587_491_825_548_299_123, b'{"x":"\xc3\xbc"}', (("user", "ü"), ("k", "")))
    assert decode_record(encode_record(e)) == e
    with pytest.raises(ValueError):
        decode_record(encode_record(e)[:5])


def test_every_corpus_event_encodes_and_decodes(push_pb2: ModuleType, corpora: Path) -> None:
    builder = EntryBuilder(LokiSettings(cluster="c"))
    events = corpus_events(corpora)
    entries = [builder.build(c.event) for c in events]
    msg = decode(push_pb2, protobuf_payload(entries))
    decoded = sorted(
        (s.labels, e.timestamp.seconds * 10**9 + e.timestamp.nanos, e.line.encode())
        for s in msg.streams
        for e in s.entries
    )
    assert decoded == sorted((e.labels, e.ts_ns, e.line) for e in entries)
    assert len(decoded) == len(events) > 17_000


def test_oversized_event_is_shrunk_and_marked_not_lost() -> None:
    obj = {
        "kind": "Event",
        "auditID": "a1",
        "stage": "ResponseComplete",
        "verb": "create",
        "requestObject": {"data": "x" * 400_000},
        "responseObject": {"data": "y" * 400_000},
        "annotations": {"authorization.k8s.io/decision": "allow"},
        "stageTimestamp": "2020-04-21T17:57:05.548299Z",
    }
    line = shrink(obj, 256_000)
    assert len(line) <= 256_000
    out = json.loads(line)
    assert "requestObject" not in out and "responseObject" not in out
    assert out["auditID"] == "a1"
    assert out["annotations"]["authorization.k8s.io/decision"] == "allow"
    assert (
        "dropped requestObject,responseObject"
        in out["annotations"]["kube-audit-exporter/truncated"]
    )


def test_shrink_falls_back_to_the_events_identity() -> None:
    obj = {
        "kind": "Event",
        "auditID": "a2",
        "stage": "ResponseComplete",
        "verb": "get",
        "requestURI": "/api?" + "q" * 50_000,
        "annotations": {f"k{i}": "v" * 1000 for i in range(100)},
        "user": {"username": "u", "groups": ["g" * 100] * 1000},
    }
    line = shrink(obj, 8192)
    assert len(line) <= 8192
    out = json.loads(line)
    assert out["auditID"] == "a2" and out["verb"] == "get"
    assert "kube-audit-exporter/truncated" in out["annotations"]


def test_fast_record_path_matches_the_entry_encoder(corpora: Path) -> None:
    builder = EntryBuilder(LokiSettings(cluster="c", labels=("stage", "namespace")))
    for c in corpus_events(corpora):
        record = builder.record(c.event)
        assert record == encode_record(builder.build(c.event)), c.where
        assert decode_record(record) == builder.build(c.event)


def test_detection_results_join_the_structured_metadata(corpora: Path) -> None:
    def hook(ev: Any) -> list[tuple[str, str]]:
        return [("rules", "secret-read,exec"), ("severity", "critical")]

    builder = EntryBuilder(LokiSettings(), metadata_hook=hook)
    ev = next(c.event for c in corpus_events(corpora / "falco-k8s-audit-trace-files"))
    meta = dict(decode_record(builder.record(ev)).metadata)
    assert meta["rules"] == "secret-read,exec"
    assert meta["severity"] == "critical"
    assert list(meta)[-1] == "detected_level"
