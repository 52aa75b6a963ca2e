"""rosbag2 files (mcap or sqlite3) read and written with ``rosbags``: no ROS install, no DDS.

Reading pairs each camera image with its ground-truth label by header stamp (the label of a
frame carries its image's stamp); every problem with a bag -- missing file or topic, wrong
type, corrupt or truncated storage, unreadable message, label and image of different sizes --
raises :class:`BagError` with a message that names the bag and the topic. Outputs are written
through :func:`staged`, so a failure never leaves a half-written file or folder behind.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer

from sparserefine_ros.image_messages import ImageError, compressed_to_rgb, image_to_rgb

from .types import typestore

DEFAULT_IMAGE_TOPIC = "/camera/image"
DEFAULT_LABEL_TOPIC = "/camera/labels"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
LABEL_ENCODINGS = ("mono8", "8UC1")
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


class BagError(Exception):
    """A bag (or output path) that cannot be used; the message says which and why."""


def stamp_ns(header) -> int:
    """A header's stamp in nanoseconds (works for rosbags and rclpy messages alike)."""
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def make_header(stamp: int, frame_id: str):
    store = typestore()
    time = store.types["builtin_interfaces/msg/Time"](*divmod(stamp, 1_000_000_000))
    return store.types["std_msgs/msg/Header"](time, frame_id)


def mono8_array(msg) -> np.ndarray:
    """The (H, W) uint8 array of a mono8 image message (class ids, labels, masks)."""
    if msg.encoding not in LABEL_ENCODINGS:
        raise ImageError(f"encoding '{msg.encoding}', expected one of {LABEL_ENCODINGS}")
    if msg.height == 0 or msg.width == 0 or msg.step < msg.width:
        raise ImageError(f"bad geometry {msg.width}x{msg.height}, step {msg.step}")
    if len(msg.data) != msg.step * msg.height:
        raise ImageError(f"data holds {len(msg.data)} bytes, expected {msg.step * msg.height}")
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    return np.ascontiguousarray(rows[:, : msg.width])


def image_msg(array: np.ndarray, encoding: str, header):
    """A rosbags ``sensor_msgs/Image`` holding ``array`` (mono8 / rgb8 / 32FC1)."""
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    return typestore().types[IMAGE](
        header, height, width, encoding, 0, array.strides[0], array.view(np.uint8).reshape(-1)
    )


@contextmanager
def staged(path: str | Path) -> Iterator[Path]:
    """A fresh path to write ``path``'s content to; it becomes ``path`` (one rename) only if the
    block succeeds and is removed otherwise. Existing outputs are never overwritten."""
    path = Path(path)
    if path.exists():
        raise BagError(f"{path} exists already; remove it or choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield scratch / path.name
        (scratch / path.name).rename(path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def open_bag(path: Path) -> Reader:
    """An open ``rosbags`` reader of a rosbag2 folder or its .mcap / .db3 file."""
    try:
        reader = Reader(path)
        reader.open()
    except FileNotFoundError as error:
        raise BagError(f"{path}: not a rosbag2 bag: {error}") from None
    except (ReaderError, OSError) as error:
        raise BagError(f"{path}: cannot open bag (corrupt or truncated?): {error}") from None
    return reader


def raw_messages(reader: Reader, connections=()) -> Iterator[tuple[object, int, bytes]]:
    """(connection, bag time in ns, CDR bytes) of every message, in bag time order.

    Damage found while reading (a truncated or corrupt file) raises BagError, and so do
    messages that the bag's index lists but the storage no longer holds.
    """
    connections = list(connections or reader.connections)
    counts = dict.fromkeys((c.id for c in connections), 0)
    try:
        for connection, time_ns, raw in reader.messages(connections):
            counts[connection.id] += 1
            yield connection, time_ns, raw
    except Exception as error:  # storage back-ends (apsw, the mcap parser) raise their own types
        raise BagError(f"{reader.path}: corrupt or truncated bag: {error}") from None
    for connection in connections:
        if counts[connection.id] != connection.msgcount:
            raise BagError(
                f"{reader.path}: corrupt or truncated bag: {connection.topic} lists "
                f"{connection.msgcount} messages, {counts[connection.id]} could be read"
            )


class BagWriter:
    """A new rosbag2 (mcap or sqlite3) whose topics are added on first write."""

    def __init__(self, path: Path, storage: str = "mcap") -> None:
        if storage not in STORAGES:
            raise BagError(f"unknown storage {storage!r}; expected one of {sorted(STORAGES)}")
        self._writer = Writer(path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
        self._connections: dict[str, object] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self._writer.close()

    def write(self, topic: str, time_ns: int, msg) -> None:
        store = typestore()
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(
                topic, msg.__msgtype__, typestore=store
            )
        self._writer.write(
            self._connections[topic], time_ns, store.serialize_cdr(msg, msg.__msgtype__)
        )


@dataclass
class Frame:
    """One camera image of a bag with its label (None if the bag has none for its stamp)."""

    time_ns: int  # when the bag recorded the image
    header: object  # the image's header (rosbags message), copied to every output
    rgb: np.ndarray  # (H, W, 3) uint8
    label: np.ndarray | None  # (H, W) uint8 train ids, 255 = ignore

    @property
    def stamp_ns(self) -> int:
        return stamp_ns(self.header)


class BagReader:
    """An open bag with a checked camera topic and, optionally, a checked label topic."""

    def __init__(
        self,
        path: str | Path,
        image_topic: str = DEFAULT_IMAGE_TOPIC,
        label_topic: str | None = None,
    ) -> None:
        self.path = Path(path)
        if image_topic == label_topic:
            raise BagError(f"the image and label topics are both {image_topic}")
        self.image_topic, self.label_topic = image_topic, label_topic
        self._reader = open_bag(self.path)
        try:
            self._image = self._connection(image_topic, (IMAGE, COMPRESSED_IMAGE))
            self._label = None if label_topic is None else self._connection(label_topic, (IMAGE,))
        except BagError:
            self.close()
            raise

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()

    @property
    def topics(self) -> dict[str, str]:
        """Topic name -> message type of every topic in the bag."""
        return {c.topic: c.msgtype for c in self._reader.connections}

    @property
    def image_count(self) -> int:
        return self._image.msgcount

    def _connection(self, topic: str, types: tuple[str, ...]):
        matches = [c for c in self._reader.connections if c.topic == topic]
        if not matches:
            listing = ", ".join(f"{t} ({m})" for t, m in sorted(self.topics.items())) or "none"
            raise BagError(f"{self.path}: no topic {topic}; the bag has: {listing}")
        if matches[0].msgtype not in types:
            raise BagError(
                f"{self.path}: topic {topic} has type {matches[0].msgtype}, expected "
                f"{' or '.join(types)}"
            )
        return matches[0]

    def _messages(self, connections) -> Iterator[tuple[object, int, object]]:
        """(connection, bag time, message), with storage and CDR errors turned into BagError."""
        store = typestore()
        for connection, time_ns, raw in raw_messages(self._reader, connections):
            try:
                msg = store.deserialize_cdr(raw, connection.msgtype)
            except Exception as error:  # the CDR decoder raises many kinds on bad bytes
                raise BagError(
                    f"{self.path}: unreadable {connection.topic} message at bag time "
                    f"{time_ns}: {error}"
                ) from None
            yield connection, time_ns, msg

    def _decode(self, topic: str, msg, decoder):
        try:
            return decoder(msg)
        except ImageError as error:
            raise BagError(
                f"{self.path}: {topic} message stamped {stamp_ns(msg.header)}: {error}"
            ) from None

    def frames(self) -> Iterator[Frame]:
        """Every camera image in bag order, each with its label when the label topic has one
        with the same stamp (labels may be recorded before or after their image)."""
        if self._label is None:
            for _, time_ns, msg in self._messages([self._image]):
                yield Frame(time_ns, msg.header, self._rgb(msg), None)
            return
        # A first pass over the (small) label messages says which images must wait for theirs.
        label_stamps = {stamp_ns(m.header) for _, _, m in self._messages([self._label])}
        waiting_images: dict[int, Frame] = {}
        waiting_labels: dict[int, np.ndarray] = {}
        for connection, time_ns, msg in self._messages([self._image, self._label]):
            stamp = stamp_ns(msg.header)
            if connection.topic == self.image_topic:
                frame = Frame(time_ns, msg.header, self._rgb(msg), None)
                if stamp in waiting_labels:
                    yield self._labelled(frame, waiting_labels.pop(stamp))
                elif stamp in label_stamps:
                    waiting_images[stamp] = frame
                else:
                    yield frame
            else:
                label = self._decode(self.label_topic, msg, mono8_array)
                if stamp in waiting_images:
                    yield self._labelled(waiting_images.pop(stamp), label)
                else:
                    waiting_labels[stamp] = label
        yield from waiting_images.values()  # only images sharing a stamp with an earlier one

    def _rgb(self, msg) -> np.ndarray:
        decoder = compressed_to_rgb if msg.__msgtype__ == COMPRESSED_IMAGE else image_to_rgb
        return self._decode(self.image_topic, msg, decoder)

    def _labelled(self, frame: Frame, label: np.ndarray) -> Frame:
        if label.shape != frame.rgb.shape[:2]:
            raise BagError(
                f"{self.path}: label on {self.label_topic} stamped {frame.stamp_ns} is "
                f"{label.shape[1]}x{label.shape[0]}, its image on {self.image_topic} is "
                f"{frame.rgb.shape[1]}x{frame.rgb.shape[0]}"
            )
        frame.label = label
        return frame


def write_drive_bag(
    path: str | Path,
    frames: int,
    fps: float = 15.0,
    seed: int = 0,
    size: tuple[int, int] = (2048, 1024),
    speed: float = 10.0,
    storage: str = "mcap",
    image_topic: str = DEFAULT_IMAGE_TOPIC,
    label_topic: str = DEFAULT_LABEL_TOPIC,
    start_ns: int = 1_727_568_000 * 1_000_000_000,
    progress: bool = True,
) -> Path:
    """Record a generated drive as a camera would: rgb8 images and mono8 train-id labels.

    Stamps are realistic and reproducible: frame i is exposed at ``start_ns + i / fps`` plus a
    little trigger jitter; the bag records the image a few milliseconds after its stamp (driver
    and transport delay) and the label, which carries its image's stamp, just after the image.
    """
    from tqdm import tqdm

    from sparserefine_ros.data.scenes import Drive

    drive = Drive(seed, frames, fps, size, speed)
    rng = np.random.default_rng([seed, 3])
    frame_id = image_topic.strip("/").split("/")[0] + "_optical_frame"
    with staged(path) as scratch, BagWriter(scratch, storage) as bag:
        for index in tqdm(range(frames), desc="make-bag", unit="frame", disable=not progress):
            frame = drive.frame(index)
            stamp = start_ns + round(index * 1e9 / fps + rng.normal(0.0, 2e5))
            received = stamp + round(rng.uniform(3e6, 8e6))
            header = make_header(stamp, frame_id)
            bag.write(image_topic, received, image_msg(frame.image, "rgb8", header))
            bag.write(label_topic, received + 100_000, image_msg(frame.train_ids, "mono8", header))
    return Path(path)
