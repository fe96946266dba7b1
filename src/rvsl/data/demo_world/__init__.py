"""The embedded demo world: a procedural vehicle-ReID dataset in the FVRID layout.

FVRID cannot be shipped, so :func:`build_demo_world` draws a small world from a seed:

- :mod:`.vehicles`: the identities (body type, colour, fine-grained details);
- :mod:`.mesh` and :mod:`.textures`: their shape as planar faces, and the paint on them;
- :mod:`.cameras`: five scenes per world, each with a viewpoint, lighting and sensor settings;
- :mod:`.render`: one vehicle in one scene, as a crop with its exact depth;
- :mod:`.sensors`: the clean synthetic camera, the "real" camera and the "real" haze;
- :mod:`.heldout`: a second "real" haze of another kind, for a final test only, and the clean
  scenes and depth maps of the real test renders for hazes brought from outside;
- :mod:`.plan`: the identity groups and the images each identity gets, rendered and written;
- :mod:`.world`: the build on disk, its ``world.json`` and the cached-world reuse.
"""

from rvsl.data.demo_world.cameras import BACKDROPS, NUM_CAMERAS, VIEWPOINTS, Camera, make_cameras
from rvsl.data.demo_world.heldout import (
    DEPTH_UNITS_PER_METRE,
    HELDOUT_FOLDERS,
    heldout_haze,
    read_depth_metres,
)
from rvsl.data.demo_world.mesh import Mesh, Part, build_mesh, vehicle_parts
from rvsl.data.demo_world.plan import GROUPS, WORLD_FOLDERS, Group, group_sizes
from rvsl.data.demo_world.render import FAR, SUPERSAMPLE, render_view
from rvsl.data.demo_world.sensors import REAL_TINTS, real_haze, real_sensor, syn_sensor
from rvsl.data.demo_world.vehicles import (
    ACCENTS,
    BODY_TYPES,
    LIGHT,
    PALETTE,
    PLATES,
    RIMS,
    TAIL,
    TRIM,
    TYRE,
    Vehicle,
    sample_vehicle,
)
from rvsl.data.demo_world.world import (
    GENERATED_FOLDERS,
    GENERATOR_VERSION,
    MANIFEST_NAME,
    DemoWorldError,
    WorldSummary,
    build_demo_world,
    foreign_files,
    read_manifest,
)
from rvsl.data.haze import HazeSynthesizer

__all__ = [
    "ACCENTS",
    "BACKDROPS",
    "BODY_TYPES",
    "DEPTH_UNITS_PER_METRE",
    "FAR",
    "GENERATED_FOLDERS",
    "GENERATOR_VERSION",
    "GROUPS",
    "HELDOUT_FOLDERS",
    "LIGHT",
    "MANIFEST_NAME",
    "NUM_CAMERAS",
    "PALETTE",
    "PLATES",
    "REAL_TINTS",
    "RIMS",
    "SUPERSAMPLE",
    "TAIL",
    "TRIM",
    "TYRE",
    "VIEWPOINTS",
    "WORLD_FOLDERS",
    "Camera",
    "DemoWorldError",
    "Group",
    "HazeSynthesizer",
    "Mesh",
    "Part",
    "Vehicle",
    "WorldSummary",
    "build_demo_world",
    "build_mesh",
    "foreign_files",
    "group_sizes",
    "heldout_haze",
    "make_cameras",
    "read_depth_metres",
    "read_manifest",
    "real_haze",
    "real_sensor",
    "render_view",
    "sample_vehicle",
    "syn_sensor",
    "vehicle_parts",
]
