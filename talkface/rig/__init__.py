"""Rigs: blendshape weights that reproduce talkface's vertex motion on a named rig (ARKit-52 or any other),
solved exactly within bounds, offline or frame by frame for a live stream, with a report of the fit."""

from talkface.rig.qp import Problem, SolveOptions, objective, prepare, solve_frames
from talkface.rig.retargeting import Fit, LiveRetargeter, resolve_rig, retarget, setup, write_fit
from talkface.rig.solve import LiveSolver, solve_products, solve_smooth, solve_weights

__all__ = ["Fit", "LiveRetargeter", "LiveSolver", "objective", "prepare", "Problem", "resolve_rig", "retarget",
           "setup", "solve_frames", "solve_products", "solve_smooth", "solve_weights", "SolveOptions", "write_fit"]
