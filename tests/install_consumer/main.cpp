// An engine's first use of an installed rankmesh, written against the public API alone (the
// umbrella header): a world of two ranks in this process, one engine thread each; tensor
// parallelism over both; a pipeline-style tensor dict from rank 0 to rank 1; an all-reduce; and
// the error code of a call made too early.
#include <rankmesh/rankmesh.hpp>

#include <cstdio>
#include <exception>
#include <string>
#include <thread>
#include <vector>

namespace {

rankmesh::Tensor filled(std::int64_t count, float value) {
  rankmesh::Tensor tensor = rankmesh::Tensor::empty(rankmesh::Shape{count}, rankmesh::DType::f32);
  for (std::int64_t i = 0; i < count; ++i) tensor.data_as<float>()[i] = value;
  return tensor;
}

// One engine thread's work on its rank; returns what went wrong ("" when nothing did).
std::string run_rank(rankmesh::ParallelState& state) {
  // Groups other than the world exist only once the model-parallel layout does.
  try {
    state.tp();
    return "tp() before initialize_model_parallel did not throw";
  } catch (const rankmesh::Error& error) {
    if (error.code() != rankmesh::Errc::not_initialized)
      return std::string("tp() too early threw ") + rankmesh::to_string(error.code());
  }

  state.initialize_model_parallel(2);  // tp = 2: both ranks in one tensor-parallel group
  rankmesh::GroupCoordinator& tp = state.tp();

  // Rank 0 hands its activations and a step counter to rank 1.
  if (tp.rank_in_group() == 0) {
    rankmesh::TensorDict dict;
    dict.set("hidden", filled(4, 1.5f));
    dict.set("step", 7);
    tp.send_tensor_dict(dict, 1);
  } else {
    rankmesh::TensorDict dict = tp.recv_tensor_dict(0);
    if (dict.at("step").as<std::int64_t>() != 7) return "the step did not arrive";
    if (dict.at("hidden").as<rankmesh::Tensor>().data_as<float>()[3] != 1.5f)
      return "the activations did not arrive";
  }

  // Every rank contributes rank + 1: the sum is 3 everywhere.
  const rankmesh::Tensor sum = tp.all_reduce(filled(8, static_cast<float>(state.rank() + 1)));
  for (std::int64_t i = 0; i < sum.numel(); ++i)
    if (sum.data_as<float>()[i] != 3.0f) return "all_reduce summed wrong";

  const rankmesh::Tensor gathered = tp.all_gather(filled(2, static_cast<float>(state.rank())), 0);
  if (gathered.numel() != 4 || gathered.data_as<float>()[2] != 1.0f) return "all_gather gathered wrong";
  return "";
}

}  // namespace

int main() {
  rankmesh::RuntimeOptions options;
  options.world_size = 2;
  rankmesh::Runtime runtime(options);

  std::vector<std::string> failures(2);
  std::vector<std::thread> engines;
  for (int rank : runtime.local_ranks())
    engines.emplace_back([&, rank] {
      try {
        failures[static_cast<std::size_t>(rank)] = run_rank(runtime.rank(rank));
      } catch (const std::exception& error) {
        failures[static_cast<std::size_t>(rank)] = error.what();
      }
    });
  for (std::thread& engine : engines) engine.join();

  for (std::size_t rank = 0; rank < failures.size(); ++rank)
    if (!failures[rank].empty()) {
      std::fprintf(stderr, "rank %zu: %s\n", rank, failures[rank].c_str());
      return 1;
    }
  std::puts("consumer ran a world of two ranks on an installed rankmesh");
  return 0;
}
