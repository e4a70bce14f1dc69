"""What sending one response's ``DataProto`` to verl's reward loop costs: verl's default serialization
(``torch.save`` of the consolidated TensorDict) vs its ``VERL_DATAPROTO_SERIALIZATION_METHOD=numpy`` (raw bytes
with dtype and shape), through Ray's own serializer, both ways interleaved.

verl 0.9.1's agent-loop worker calls ``reward_loop_worker.compute_score.remote(data)`` once per response
(``AgentLoopWorker._compute_score``) with a one-row ``DataProto`` (prompts, responses, input_ids, attention_mask,
position_ids and the non-tensor fields); a py-spy profile of a protocol run put 25 % of that worker's samples in
pickling it. This script builds that ``DataProto`` for a demo-sized response (24 prompt, 15 response tokens),
round-trips it with ``ray.cloudpickle`` under each method, asserts the tensors come back identical (dtype, shape,
values), and prints process CPU time per response:

    python bench/dataproto_serialization.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ENV = "VERL_DATAPROTO_SERIALIZATION_METHOD"


def one_response():
    import numpy as np
    import torch
    from tensordict import TensorDict
    from verl.protocol import DataProto

    prompt, response = torch.randint(0, 64, (24,)), torch.randint(0, 64, (15,))
    input_ids = torch.cat([prompt, response])
    batch = TensorDict({"prompts": prompt[None], "responses": response[None], "input_ids": input_ids[None],
                        "attention_mask": torch.ones_like(input_ids)[None],
                        "position_ids": torch.arange(input_ids.numel())[None]}, batch_size=1)
    non_tensor = {"data_source": np.array(["papo_demo/countdown"]),
                  "reward_model": np.array([{"ground_truth": "3 4 5 6 -> 18", "style": "rule"}], dtype=object),
                  "__num_turns__": np.array([2]), "tool_extra_fields": np.array([{}], dtype=object),
                  "prompt_len": np.array([24]), "response_len": np.array([15])}
    return DataProto(batch=batch, non_tensor_batch=non_tensor)


def main() -> None:
    import ray.cloudpickle as pickle
    import torch
    from benchinfo import git_commit

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = one_response()
    cpu, size = {"torch": 0.0, "numpy": 0.0}, {}
    for _ in range(args.calls):
        for method in cpu:
            if method == "numpy":
                os.environ[ENV] = "numpy"
            else:
                os.environ.pop(ENV, None)
            start = time.process_time()
            back = pickle.loads(pickle.dumps(data))
            cpu[method] += time.process_time() - start
            size.setdefault(method, len(pickle.dumps(data)))
            for key, value in data.batch.items():
                assert back.batch[key].dtype == value.dtype and torch.equal(back.batch[key], value), key
            assert back.non_tensor_batch.keys() == data.non_tensor_batch.keys()
    per = {k: v / args.calls * 1e3 for k, v in cpu.items()}
    print(f"commit: {git_commit()}; {args.calls} round trips each way (dumps + loads), torch threads 1")
    for method, ms in per.items():
        print(f"{method:>5}: {ms:.3f} ms CPU per response ({size[method]} bytes); per demo step (128 responses) "
              f"{ms * 128 / 1e3:.2f} s; per protocol run (60 x 256 + 5 x 4096 responses) {ms * 35840 / 1e3:.0f} s")
    print(f"ratio_torch_vs_numpy_dataproto_round_trip_cpu_time: {per['torch'] / per['numpy']:.2f}")


if __name__ == "__main__":
    main()
