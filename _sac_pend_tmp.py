import torch, time
torch.set_num_threads(1)
from algorithms.sac import SACConfig
from platform.datasets.generate import train_sac
t = time.time()
agent, buf, prog = train_sac("pendulum", "/tmp/scratch/sacpend", 6000, seed=1, eval_every=1000, eval_episodes=5,
                             checkpoint_every=3000, config=SACConfig(learning_starts=1000), quiet=True)
print([(e["step"], round(e["return_mean"], 1)) for e in prog["evals"]], time.time() - t)
