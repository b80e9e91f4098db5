"""The B1+ factor map of a B1 mapping method (TB1AFI, TB1DAM, TB1TFL, TB1RFM, TB1EPI) from its
images: :func:`bids_agquant.qmri.b1methods.factor_map` on the grid of the collection's first
image, NaN where the method gives no factor. :class:`~bids_agquant.interfaces.vfa.FitVFA` then
uses it as it uses a TB1map (resampled onto the VFA grid, head voxels without a value filled).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from nipype.interfaces.base import (BaseInterfaceInputSpec, File, InputMultiObject, SimpleInterface,
                                    TraitedSpec, traits)

from bids_agquant.qmri import b1methods as B1M

from . import geometry as G

__all__ = ["ComputeB1Factor"]


class _ComputeB1InputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(File(exists=True), mandatory=True,
                                desc="the method's images, one grid, in collection order")
    roles = traits.List(traits.Str, mandatory=True, desc="role of each image (METHODS roles)")
    method = traits.Enum(*B1M.COMPUTED_METHODS, mandatory=True, desc="fmap suffix")
    params = traits.Dict(mandatory=True, desc="protocol values (validate.b1_method_params)")


class _ComputeB1OutputSpec(TraitedSpec):
    b1_file = File(exists=True, desc="B1+ factor (1 = nominal), grid of in_files[0]")
    n_defined = traits.Int(desc="voxels with a factor")


class ComputeB1Factor(SimpleInterface):
    """Load a B1 method's images, compute the B1+ factor map, save it (float32)."""
    input_spec = _ComputeB1InputSpec
    output_spec = _ComputeB1OutputSpec

    def _run_interface(self, runtime):
        files = list(self.inputs.in_files)
        if len(files) != len(self.inputs.roles):
            raise ValueError(f"{len(files)} {self.inputs.method} images but "
                             f"{len(self.inputs.roles)} roles ({files[0]} ...)")
        stacked, affine = G.load_many(files, dtype=np.float64)     # one grid, checked
        arrays = [stacked[..., i] for i in range(stacked.shape[-1])]
        params = {k: (tuple(v) if isinstance(v, list) else v)
                  for k, v in dict(self.inputs.params).items()}
        factor = B1M.factor_map(self.inputs.method,
                                B1M.images_by_role(self.inputs.method, self.inputs.roles, arrays),
                                params)
        self._results["b1_file"] = G.save_like(factor.astype(np.float32), affine,
                                               Path(runtime.cwd, "b1_factor.nii"))
        self._results["n_defined"] = int(np.isfinite(factor).sum())
        return runtime
