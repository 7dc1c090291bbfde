"""The Modal runner's event transport, without Modal: batching into queue items under 1 MiB, and reassembly."""

from __future__ import annotations

from mini_magic import wire
from mini_magic.worker.modal import END_OF_RUN, ITEM_BYTES, ItemDecoder, QueueSender, encode_items


class FakeQueue:
    def __init__(self) -> None:
        self.puts: list[list] = []

    def put_many(self, items: list, *, partition: str) -> None:
        assert partition == "run-1"
        self.puts.append(list(items))


def test_large_batches_are_split_into_items_under_the_limit_and_reassembled() -> None:
    big = "x" * (3 * ITEM_BYTES)
    events = [wire.Stdout(seq=1, text="small"), wire.Stderr(seq=2, text=big), wire.Stdout(seq=3, text="after")]
    items = encode_items(events, batch=7)
    assert len(items) >= 4 and all(len(chunk) <= ITEM_BYTES for *_, chunk in items)
    decoder = ItemDecoder()
    out = [e for item in items for e in decoder.feed(item)]
    assert [e.seq for e in out] == [1, 2, 3] and out[1].text == big


def test_sender_keeps_the_terminal_event_and_ends_with_a_marker() -> None:
    queue = FakeQueue()
    sender = QueueSender(queue, "run-1", interval=60)
    sender.send([wire.Stdout(seq=1, text="a"), wire.Stdout(seq=2, text="b")])
    result = wire.Error(seq=3, type_module="builtins", type_qualname="ValueError", message="m", traceback="")
    sender.send([result])
    sender.close()
    assert sender.terminal is result
    items = [item for put in queue.puts for item in put]
    assert items[-1] == END_OF_RUN and len(queue.puts) == 1  # one put_many for the whole run
    decoder = ItemDecoder()
    events = [e for item in items for e in decoder.feed(item)]
    assert [e.seq for e in events] == [1, 2] and decoder.ended


def test_a_vanished_queue_does_not_lose_the_result() -> None:
    class GoneQueue:
        def put_many(self, items: list, *, partition: str) -> None:
            raise ConnectionError("queue deleted")

    sender = QueueSender(GoneQueue(), "run-1", interval=60)
    sender.send([wire.Stdout(seq=1, text="lost"), wire.Result(seq=2, outputs=wire.pack_values({})[0], unsendable={},
                                                               deleted=())])
    sender.close()
    assert isinstance(sender.terminal, wire.Result)
