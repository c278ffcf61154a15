"""A client's trained vector leaves the GPU once, on a side stream, into reused page-locked host
vectors (federation/readback.py), checked on fake CUDA tensors (dispatch_probes.py) with a
recording stand-in for torch.cuda's streams and events: which copies cross the device boundary,
on which stream, after which event, and that nothing waits for the device before the round asks
for the vector (tests/federation/test_pipeline.py checks the pipelined order on real runs)."""
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from dispatch_probes import fake_cuda, move_to_fake

from feddm_hpc.federation.client import StagedStart, to_device
from feddm_hpc.federation.readback import HostReadback, Pending, StreamReadback, make_readback
from feddm_hpc.params import ParamViews

pytestmark = pytest.mark.device

DEVICE = "cuda:1"


class RecordingCuda:
    """torch.cuda's Stream, Event and stream() as StreamReadback uses them, logging each call
    with the stream it ran on and how many device transfers had been made by then."""

    def __init__(self, recorder):
        self.recorder, self.log, self.current = recorder, [], "training"
        cuda = self

        class Stream:
            def __init__(self, device):
                self.device, self.name = device, "side"

            def wait_event(self, event):
                cuda.log.append(("wait", self.name, event.name))

        class Event:
            count = 0

            def __init__(self):
                Event.count += 1
                self.name = f"event{Event.count}"

            def record(self):
                cuda.log.append(("record", cuda.current, self.name, len(cuda.recorder.transfers)))

            def synchronize(self):
                cuda.log.append(("synchronize", self.name))

        self.Stream, self.Event = Stream, Event

    @contextmanager
    def stream(self, stream):
        before, self.current = self.current, stream.name
        try:
            yield
        finally:
            self.current = before


def fake_model():
    torch.manual_seed(0)
    return move_to_fake(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Linear(5, 3)), DEVICE)


def stub_trainer(model):
    params = list(model.parameters())
    views = SimpleNamespace(params=params, device=params[0].device, intact=lambda: True)
    return SimpleNamespace(views=views, params=params)


def test_each_client_leaves_the_device_once_on_the_side_stream_without_waiting():
    with fake_cuda() as rec:
        model = fake_model()
        trainer = stub_trainer(model)
        cuda = RecordingCuda(rec)
        readback = make_readback(trainer, pipelined=True, cuda=cuda)
        assert isinstance(readback, StreamReadback)
        loss = torch.zeros((), device=DEVICE)
        rec.clear()
        pendings = [readback.start(trainer, loss) for _ in range(4)]
    total = sum(p.numel() for p in model.parameters())
    # per client: the vector and its loss, device -> page-locked host, asynchronous; nothing else
    assert rec.transfers == [(DEVICE, "cpu", True, True)] * 8
    assert rec.reads == [] and rec.mixed == []
    # order per client: snapshot recorded on the training stream (before any copy of it), the
    # side stream waits for it, copies, records its own event; no synchronize yet
    for i in range(4):
        trained, waited, done = cuda.log[3 * i: 3 * i + 3]
        assert trained == ("record", "training", trained[2], 2 * i)
        assert waited == ("wait", "side", trained[2])
        assert done == ("record", "side", done[2], 2 * i + 2)
    assert not any(entry[0] == "synchronize" for entry in cuda.log)
    # two page-locked host vectors of the model's size, taken in turn
    hosts = [p._vector for p in pendings]
    assert [h.numel() for h in hosts] == [total] * 4
    assert hosts[0] is hosts[2] and hosts[1] is hosts[3] and hosts[0] is not hosts[1]


def test_waiting_synchronizes_the_copy_once_and_releases_the_snapshot():
    log = []
    done = SimpleNamespace(synchronize=lambda: log.append("synchronize"))
    pending = Pending(torch.arange(3, dtype=torch.float32), torch.tensor(6.0), done,
                      keep=("snapshot",))
    vector, loss = pending.wait()
    assert log == ["synchronize"] and pending._keep == ()
    assert np.array_equal(vector, [0, 1, 2]) and loss == 6.0
    pending.wait()
    assert log == ["synchronize"]   # once


def test_a_replaced_parameter_falls_back_to_the_plain_read():
    hosts, loss = [torch.zeros(58), torch.zeros(58)], torch.tensor(2.0)   # real: numpy views
    with fake_cuda() as rec:
        model = fake_model()
        trainer = stub_trainer(model)
        trainer.views.intact = lambda: False
        trainer.read_into = lambda out: out.fill(7.0)
        cuda = RecordingCuda(rec)
        readback = StreamReadback(trainer.views.params, 2, cuda)
        assert readback.host.tensors[0].numel() == 58
        readback.host.tensors = hosts
        rec.clear()
    pending = readback.start(trainer, loss)   # (real host tensors: outside the fake mode)
    vector, loss = pending.wait()
    assert (vector == 7.0).all() and loss == 2.0
    assert cuda.log == [] and rec.transfers == []   # no snapshot, no side-stream copy


def test_a_cpu_model_reads_synchronously_into_reused_vectors():
    model = torch.nn.Linear(3, 2)
    trainer = SimpleNamespace(views=None, params=list(model.parameters()),
                              read_into=lambda out: out.fill(7.0))
    readback = make_readback(trainer, pipelined=False)
    assert isinstance(readback, HostReadback) and len(readback.host.tensors) == 1
    vector, loss = readback.start(trainer, torch.tensor(1.5)).wait()
    assert vector.shape == (8,) and (vector == 7.0).all() and loss == 1.5


@pytest.mark.filterwarnings("ignore:Accessing the data pointer of FakeTensor")
def test_the_rounds_start_crosses_to_the_device_once_and_clients_load_it_there():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Linear(5, 3))
    start = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    with fake_cuda() as rec:
        move_to_fake(model, DEVICE)
        views = ParamViews.bind(model)
        rec.clear()
        staged = StagedStart(start, to_device(start, DEVICE))
        assert rec.transfers == [("cpu", DEVICE, True, True)]   # page-locked, asynchronous
        for _ in range(3):   # three clients of the round
            staged.write_into(views)
        with pytest.raises(ValueError, match="values"):
            views.load_tensor(torch.zeros(5, device=DEVICE))
    assert rec.transfers == [("cpu", DEVICE, True, True)] and rec.reads == [] and rec.mixed == []
    assert staged.compose() is start
