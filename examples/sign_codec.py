"""A user's uplink codec: scaled sign compression (1 bit per value plus one float32 scale),
meant to run with error feedback (signSGD with error feedback, Karimireddy et al. 2019, "Error
Feedback Fixes SignSGD and other Gradient Compression Schemes").

    x_hat = scale * sign(x),   scale = mean(|x|),   sign(0) = +1

The scale mean|x| is the L2-best scale for a sign vector (it minimises ||x - s*sign(x)||^2 over
s), and error feedback carries what a round's payload misses into the client's next update.
Payload: the 32-byte header (codec id 200, bits 1) + the float32 scale + ceil(n/8) bytes of
packed sign bits, about 32x smaller than float32.

Use it without editing feddm_hpc: put the folder holding `examples/` (here the repository root)
on PYTHONPATH on every rank, and name the class by import path:

    PYTHONPATH=$PWD mpiexec -n 2 python -m mpi4py -m feddm_hpc train configs/tiny.yaml \\
        --set compression.uplink=examples.sign_codec:SignCompressor \\
        --set compression.error_feedback=true

or copy this file into a package of your own (`--set compression.uplink=mypkg.codecs:SignCompressor`).
`feddm-hpc validate` imports and checks the class the same way. The protocol (feddm_hpc.extend):
a Compressor subclass with `name`, `codec_ids` in 128-255 (the package's own codecs use 0-127),
`_encode`, and the classmethods `body_size` and `decode_body`.
"""
import numpy as np

from feddm_hpc.extend import HEADER_SIZE, Compressor, Header, finite_range

CODEC_SIGN = 200   # any unused id in feddm_hpc.extend.USER_CODEC_IDS (128-255)


class SignCompressor(Compressor):
    name = "sign"
    codec_ids = (CODEC_SIGN,)

    def _encode(self, x, rng):
        finite_range(x)                        # NaN/Inf (a diverged client) -> ValueError
        n = x.size
        payload = self._new_payload(Header(CODEC_SIGN, 1, n=n), self.body_size_of(n))
        body = payload[HEADER_SIZE:]
        scale = np.float32(np.abs(x, dtype=np.float32).mean(dtype=np.float64)) if n else 0.0
        body[:4].view("<f4")[0] = scale
        body[4:] = np.packbits(x >= 0)         # 1: +scale, 0: -scale
        return payload

    @staticmethod
    def body_size_of(n: int) -> int:
        return 4 + (n + 7) // 8

    @classmethod
    def body_size(cls, header):
        return cls.body_size_of(header.n)

    @classmethod
    def decode_body(cls, header, body, out=None):
        scale = body[:4].view("<f4")[0]
        signs = np.unpackbits(body[4:], count=header.n)
        if out is None:
            out = np.empty(header.n, dtype=np.float32)
        # 2*bit - 1 in {-1, +1}, times the scale, written into out without temporaries of float64.
        np.multiply(signs, np.float32(2 * scale), out=out, casting="unsafe")
        out -= scale
        return out
