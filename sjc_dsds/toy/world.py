"""The fixed constants of the synthetic world, in one place (the flags are `--toy.*`).

Everything that defines the world and is not a flag lives here; none of it was tuned to make
any debiasing method win. Changing a value changes the world, so benchmarks quote this file.
"""

from __future__ import annotations

# Seed of the world's own random draws (prior cameras, captions, distractor choice): the prior
# is the same for every run seed.
WORLD_SEED = 20230415

# Ground-truth voxel grid side (cube) used to render the prior and the reference orbit.
GROUND_TRUTH_GRID_SIZE = 64

# Density inside an object (per world unit): a 0.05-long path inside is 1 - e^-3 opaque.
DENSITY_INSIDE = 60.0

# Width of the smooth step from empty to full density across a surface (world units).
SURFACE_WIDTH = 0.01

# Evaluation orbit: this many cameras evenly spaced in azimuth (offset by half a step so that
# no camera sits on a view-label boundary), at this elevation, at the run's camera distance R
# and test field of view --pose.FoV.
ORBIT_N_VIEWS = 24
ORBIT_ELEVATION_DEG = 15.0

# Alpha above which a pixel counts as object for silhouette IoU.
SILHOUETTE_ALPHA = 0.5
