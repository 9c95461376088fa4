"""WebRTC output of a :class:`~echomimic.stream.Stream` (aiortc).

* **Video**: H.264 is preferred. A session's frames are encoded **once** (PyAV's libx264,
  constrained baseline, zero latency, a key frame every 2 s and whenever a viewer joins) and the
  same packets are packetised for every viewer: aiortc's sender takes ``av.Packet`` objects from
  a track and only packs them into RTP. When a browser accepts only VP8, that viewer gets raw
  frames and aiortc encodes VP8 for it (one encoder per such viewer).
* **Audio**: 20 ms PCM chunks of the session's clock, encoded to Opus by aiortc per viewer (Opus
  at this size costs little).
* **ICE**: no STUN or TURN server unless configured (``ice_servers``); host candidates only.
  :func:`restrict_host_addresses` pins the addresses offered (aioice never offers loopback on its
  own).
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import re
import threading
from typing import Any

from .session import SAMPLE_RATE, Stream, VideoFrame

log = logging.getLogger("echomimic.stream.webrtc")

#: Seconds between key frames of the shared H.264 encoding.
KEYFRAME_INTERVAL = 2.0


def restrict_host_addresses(addresses: list[str] | None) -> None:
    """Offer ICE host candidates on these addresses only (e.g. ``["127.0.0.1"]`` on one
    machine, or the address of one interface). ``None`` restores aioice's own choice."""
    import aioice.ice as ice

    if not hasattr(ice, "_echomimic_original_hosts"):
        ice._echomimic_original_hosts = ice.get_host_addresses
    if addresses is None:
        ice.get_host_addresses = ice._echomimic_original_hosts
        return
    fixed = list(addresses)

    def hosts(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    ice.get_host_addresses = hosts


class SharedH264:
    """One H.264 encoding of a session, fanned out to every H.264 viewer as ``av.Packet``s."""

    def __init__(self, stream: Stream):
        self.stream = stream
        self._viewers: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue, list]] = {}
        self._lock = threading.Lock()
        self._keyframe = True
        self._sub = stream.subscribe(("video",), maxsize=8)
        self._thread = threading.Thread(target=self._run, name="echomimic-h264", daemon=True)
        self._thread.start()
        self.packets = 0

    def add_viewer(self, loop: asyncio.AbstractEventLoop) -> tuple[int, asyncio.Queue]:
        q: asyncio.Queue = asyncio.Queue(maxsize=60)
        with self._lock:
            key = id(q)
            self._viewers[key] = (loop, q, [False])   # [has seen a key frame]
            self._keyframe = True
        return key, q

    def remove_viewer(self, key: int) -> None:
        with self._lock:
            self._viewers.pop(key, None)

    def _encoder(self):
        import av

        s = self.stream
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height = s.width, s.height
        codec.pix_fmt = "yuv420p"
        codec.time_base = fractions.Fraction(1, 90000)
        codec.framerate = fractions.Fraction(s.fps).limit_denominator(1001)
        codec.gop_size = max(1, int(round(KEYFRAME_INTERVAL * s.fps)))
        codec.max_b_frames = 0
        codec.profile = "Baseline"
        codec.bit_rate = 1_500_000
        codec.options = {"preset": "ultrafast", "tune": "zerolatency", "level": "31",
                         "x264-params": "repeat-headers=1:nal-hrd=none:scenecut=0"}
        return codec

    def _run(self) -> None:
        import av

        codec = None
        try:
            while True:
                item = self._sub.get()
                if item is None:
                    break
                if not isinstance(item, VideoFrame):
                    continue
                with self._lock:
                    if not self._viewers:
                        continue
                    force, self._keyframe = self._keyframe, False
                if codec is None:
                    codec = self._encoder()
                frame = av.VideoFrame.from_ndarray(item.image, format="rgb24")
                frame.pts = int(round(item.index * 90000 / item.fps))
                frame.time_base = fractions.Fraction(1, 90000)
                if force:
                    frame.pict_type = av.video.frame.PictureType.I
                for packet in codec.encode(frame.reformat(format="yuv420p")):
                    self._fan_out(packet)
        except Exception:
            log.exception("H.264 encoding failed")
        finally:
            with self._lock:
                viewers = list(self._viewers.values())
            for loop, q, _ in viewers:
                _put(loop, q, None)

    def _fan_out(self, packet) -> None:
        self.packets += 1
        key = bool(packet.is_keyframe)
        with self._lock:
            viewers = list(self._viewers.values())
        for loop, q, seen in viewers:
            if not seen[0]:
                if not key:
                    continue
                seen[0] = True
            _put(loop, q, packet)

    def close(self) -> None:
        self._sub.close()


def _put(loop: asyncio.AbstractEventLoop, q: asyncio.Queue, item: Any) -> None:
    def put() -> None:
        if item is None:
            while q.full():
                q.get_nowait()
        if not q.full():          # a viewer too slow to take its packets loses them
            q.put_nowait(item)

    try:
        loop.call_soon_threadsafe(put)
    except RuntimeError:
        pass


def _tracks():
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    class SessionAudioTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self, stream: Stream):
            super().__init__()
            self.sub = stream.subscribe(("audio",), loop=asyncio.get_running_loop())

        async def recv(self):
            import av

            item = await self.sub.aget()
            if item is None:
                self.stop()
                raise MediaStreamError
            frame = av.AudioFrame.from_ndarray(item.samples[None, :], format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = item.pts
            frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
            return frame

        def stop(self) -> None:
            self.sub.close()
            super().stop()

    class SessionVideoTrack(MediaStreamTrack):
        """Shared H.264 packets (``packets=True``) or raw frames for aiortc to encode."""

        kind = "video"

        def __init__(self, stream: Stream):
            super().__init__()
            self.stream = stream
            self.shared = None
            self.sub = None
            self.key = self.q = None

        def use(self, shared: SharedH264 | None) -> None:
            """Packets of the shared H.264 encoding, or frames (``None``) for aiortc's VP8."""
            self.shared = shared
            loop = asyncio.get_running_loop()
            if shared is not None:
                self.key, self.q = shared.add_viewer(loop)
            else:
                self.sub = self.stream.subscribe(("video",), maxsize=30, loop=loop)

        async def recv(self):
            import av

            while self.q is None and self.sub is None:     # use() comes with the answer
                await asyncio.sleep(0.01)
            if self.q is not None:
                packet = await self.q.get()
                if packet is None:
                    self.stop()
                    raise MediaStreamError
                return packet
            item = await self.sub.aget()
            if item is None:
                self.stop()
                raise MediaStreamError
            frame = av.VideoFrame.from_ndarray(item.image, format="rgb24")
            frame.pts = int(round(item.index * 90000 / item.fps))
            frame.time_base = fractions.Fraction(1, 90000)
            return frame

        def stop(self) -> None:
            if self.shared is not None and self.key is not None:
                self.shared.remove_viewer(self.key)
            if self.sub is not None:
                self.sub.close()
            super().stop()

    return SessionAudioTrack, SessionVideoTrack


def _video_codec_of(sdp: str) -> str | None:
    """The first video codec of an SDP (the one that will be used)."""
    m = re.search(r"^m=video \d+ [^ ]+ ([0-9 ]+)", sdp, re.M)
    if not m:
        return None
    first = m.group(1).split()[0]
    r = re.search(rf"^a=rtpmap:{first} ([A-Za-z0-9]+)/", sdp, re.M)
    return r.group(1).upper() if r else None


class WebRtcOutput:
    """The viewers of one session. ``await answer(offer_sdp)`` adds one and returns its SDP
    answer; :meth:`close` ends them all."""

    def __init__(self, stream: Stream, *, ice_servers: list[dict] | None = None):
        self.stream = stream
        self.ice_servers = list(ice_servers or [])
        self.pcs: set = set()
        self._shared: SharedH264 | None = None
        self._lock = threading.Lock()

    def shared(self) -> SharedH264:
        with self._lock:
            if self._shared is None:
                self._shared = SharedH264(self.stream)
            return self._shared

    async def answer(self, sdp: str, type_: str = "offer") -> dict[str, str]:
        from aiortc import (RTCConfiguration, RTCIceServer, RTCPeerConnection,
                            RTCRtpSender, RTCSessionDescription)

        if not re.search(r"^m=(audio|video) ", sdp, re.M):
            raise ValueError("the offer asks for neither audio nor video")
        servers = [RTCIceServer(**s) for s in self.ice_servers]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.pcs.add(pc)
        AudioTrack, VideoTrack = _tracks()
        try:
            kinds = set(re.findall(r"^m=(audio|video) ", sdp, re.M))
            video = None
            if "video" in kinds:
                # the transceiver exists before the offer is applied, so that its codec
                # preferences (H.264 first, VP8 next) decide the answer
                video = VideoTrack(self.stream)
                tr = pc.addTransceiver(video, direction="sendonly")
                caps = RTCRtpSender.getCapabilities("video").codecs
                tr.setCodecPreferences([c for c in caps if c.mimeType == "video/H264"]
                                       + [c for c in caps if c.mimeType == "video/VP8"]
                                       + [c for c in caps if c.mimeType == "video/rtx"])
            if "audio" in kinds:
                pc.addTransceiver(AudioTrack(self.stream), direction="sendonly")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=type_))
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
            codec = _video_codec_of(pc.localDescription.sdp)
            if video is not None:      # before the first recv(): ICE has not even started
                video.use(self.shared() if codec == "H264" else None)
        except Exception:
            await self._drop(pc)
            raise

        @pc.on("connectionstatechange")
        async def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._drop(pc)

        pc.echomimic_codec = codec
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
                "video_codec": codec or ""}

    async def _drop(self, pc) -> None:
        self.pcs.discard(pc)
        for sender in pc.getSenders():
            if sender.track is not None:
                sender.track.stop()
        await pc.close()

    async def close(self) -> None:
        for pc in list(self.pcs):
            await self._drop(pc)
        if self._shared is not None:
            self._shared.close()

    def info(self) -> dict[str, Any]:
        return {"viewers": len(self.pcs),
                "codecs": sorted({getattr(pc, "echomimic_codec", "") or "" for pc in self.pcs}),
                "shared_h264_packets": self._shared.packets if self._shared else 0}


__all__ = ["KEYFRAME_INTERVAL", "SharedH264", "WebRtcOutput", "restrict_host_addresses"]
