# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The simulated forecourt of ./fuel up with the lane camera of island 1

The DART pumps of `iot_box.simulators.dart_pump` on one UDP gateway, with
its customers now and then (`SimulatedStation`), and a folder camera: a
customer of the watched pump (island 1, 0x50) first drives in front of
the camera, that is, a few synthetic frames of the demo car's plate
(`iot_box.lpr.synth`) are dropped into the camera's folder, and lifts the
nozzle `--lead` seconds later, when the box has read the plate and sent
it to the platform.  The platform then binds the fill to the enrolled
vehicle and charges it to the member (fuel_plate).

    python -m tools.demo_camera --udp 127.0.0.1:5001 \\
        --camera-dir var/box/camera --plate 浙A66888 --auto-fill-every 15

`write_scene` is also what the system test (tests/test_station_plate.py)
drops into the box's camera folder.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import uuid
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import cv2

from iot_box.lpr.plate import PlateColour
from iot_box.lpr.synth import Layout, PlateGenerator
from iot_box.simulators.dart_pump import (
    DEFAULT_FLOW_RATE,
    PumpServer,
    SimulatedPump,
    SimulatedStation,
    demo_pumps,
    load_totals,
    save_totals,
)

logger = logging.getLogger('tools.demo_camera')

# A car stays in front of the camera a second or so: this many frames,
# FRAME_GAP seconds apart (the box votes them into one read)
FRAMES = 3
FRAME_GAP = 0.4
# How long before the lift the car is seen: the box's vote closes 2 s
# after the last frame (iot_box.lpr.voting), then the read is sent
LEAD = 6.0
# Degradation of the frames (iot_box.lpr.synth: 0 clean to 1 hard): a
# lit island seen by a good camera
STRENGTH = 0.3
# How often the totalizers are written with --state (as the simulator)
STATE_SAVE_INTERVAL = 2.0


def write_scene(
        directory: Path, plate: str, colour: str = 'blue', seed: int = 0,
        generator: PlateGenerator | None = None) -> Path:
    """Write one camera frame of a car with plate (a 7-character one-row
    plate) into directory as a JPEG, atomically (a hidden file renamed:
    the folder camera skips hidden files); return its path"""
    generator = generator or PlateGenerator(seed=seed)
    sample = generator.scene(
        plate=(plate, PlateColour(colour), Layout.SINGLE),
        strength=STRENGTH)
    ok, data = cv2.imencode(
        '.jpg', sample.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("cannot encode the scene as JPEG")
    name = f'{uuid.uuid4().hex}.jpg'
    temporary = directory / f'.{name}'
    temporary.write_bytes(data.tobytes())
    path = directory / name
    os.replace(temporary, path)
    return path


class LaneCamera:
    "The demo car passing the camera: a few frames into the folder"

    def __init__(
            self, directory: Path, plate: str, colour: str = 'blue',
            seed: int = 0) -> None:
        self.directory = directory
        self.plate = plate
        self.colour = colour
        self.generator = PlateGenerator(seed=seed)

    async def pass_by(self) -> None:
        for frame in range(FRAMES):
            if frame:
                await asyncio.sleep(FRAME_GAP)
            path = await asyncio.to_thread(
                write_scene, self.directory, self.plate, self.colour,
                generator=self.generator)
            logger.info("camera: %s in %s", self.plate, path.name)


class LaneStation(SimulatedStation):
    """Customers as SimulatedStation's; those of the watched pumps are
    seen by the camera `lead` seconds before they lift the nozzle"""

    def __init__(
            self, pumps: Sequence[SimulatedPump], every: float,
            camera: LaneCamera, watched: set[int], *, lead: float = LEAD,
            **kwargs: object) -> None:
        super().__init__(pumps, every, **kwargs)  # type: ignore[arg-type]
        self.camera = camera
        self.watched = watched
        self.lead = lead

    async def _customer(self, pump: SimulatedPump) -> None:
        if pump.address in self.watched:
            await self.camera.pass_by()
            await asyncio.sleep(self.lead)
        await super()._customer(pump)


async def _keep_totals(pumps: Sequence[SimulatedPump], path: Path) -> None:
    try:
        while True:
            await asyncio.sleep(STATE_SAVE_INTERVAL)
            save_totals(pumps, path)
    finally:
        save_totals(pumps, path)


async def serve(
        pumps: Sequence[SimulatedPump], udp: tuple[str, int],
        station: LaneStation, state: Path | None) -> None:
    keeper = None
    if state is not None:
        load_totals(pumps, state)
        keeper = asyncio.create_task(_keep_totals(pumps, state))
    try:
        async with PumpServer(pumps) as server:
            print('DART line on udp:%s:%s' % await server.start_udp(*udp),
                flush=True)
            await station.run()
    finally:
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(':')
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"HOST:PORT expected, not {text!r}")
    return host, int(port)


def _positive(text: str) -> Decimal:
    value = Decimal(text)
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: not a positive number")
    return value


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m tools.demo_camera',
        description=__doc__.splitlines()[0])
    parser.add_argument('--udp', type=_host_port, required=True,
        metavar='HOST:PORT')
    parser.add_argument('--pumps', type=int, default=2)
    parser.add_argument('--nozzles', type=int, default=2)
    parser.add_argument('--auto-fill-every', type=float, default=15.0,
        metavar='SECONDS', help="a customer comes about this often (mean)")
    parser.add_argument('--flow-rate', type=_positive,
        default=DEFAULT_FLOW_RATE, metavar='L_PER_S')
    parser.add_argument('--camera-dir', type=Path, required=True,
        help="the folder of the box's folder camera")
    parser.add_argument('--plate', required=True,
        help="the plate of the car the camera sees")
    parser.add_argument('--colour', default='blue',
        choices=[c.value for c in PlateColour])
    parser.add_argument('--watch', type=lambda t: int(t, 0),
        action='append', metavar='ADDRESS',
        help="the pump the camera sees (default 0x50, island 1)")
    parser.add_argument('--lead', type=float, default=LEAD,
        help="seconds between the camera and the lift")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--state', type=Path, metavar='FILE',
        help="keep the totalizers in FILE across restarts (JSON)")
    args = parser.parse_args(argv)
    if args.auto_fill_every <= 0:
        parser.error("--auto-fill-every must be positive")
    pumps = demo_pumps(args.pumps, args.nozzles)
    for pump in pumps:
        pump.flow_rate = args.flow_rate
    args.camera_dir.mkdir(parents=True, exist_ok=True)
    camera = LaneCamera(args.camera_dir, args.plate, args.colour, args.seed)
    station = LaneStation(
        pumps, args.auto_fill_every, camera, set(args.watch or [0x50]),
        lead=args.lead, seed=args.seed)
    # SIGTERM (./fuel up stopping its children) ends like Ctrl-C, so that
    # --state is written one last time
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(level=logging.INFO,
        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    try:
        asyncio.run(serve(pumps, args.udp, station, args.state))
    except KeyboardInterrupt:
        logger.info("stopped")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
