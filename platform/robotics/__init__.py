"""Robot benchmarks of the papers (Franka Kitchen, robomimic/robosuite, Block Pushing, AntMaze, Adroit pen).

``envs.py``: env factories by platform id; ``blockpush.py``: the IBC Block Pushing task in pybullet and
its scripted oracle; ``demos.py``: scripted demonstrations written in robomimic's HDF5 format;
``compat.py``: MuJoCo 4 patches for gymnasium-robotics and robosuite.
"""
