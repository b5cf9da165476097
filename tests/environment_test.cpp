// Where a process learns its place in a world from the launcher's variables: torchrun's (set by
// `rankmesh launch`), OpenMPI's and Slurm's, and their errors.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>

#include "environment.hpp"
#include "parker.hpp"
#include "rankmesh/error.hpp"
#include "rankmesh/runtime.hpp"

using namespace rankmesh;

namespace {

// Every variable process_place_from_environment() reads.
constexpr const char* kVariables[] = {
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE",
    "MASTER_ADDR", "MASTER_PORT", "RANKMESH_REGISTRY_FD",
};

// Sets exactly `variables` among kVariables for its lifetime, then puts back what was there.
class ScopedEnvironment {
public:
  explicit ScopedEnvironment(const std::map<std::string, std::string>& variables) {
    for (const char* name : kVariables) {
      if (const char* value = std::getenv(name)) saved_[name] = value;
      ::unsetenv(name);
    }
    for (const auto& [name, value] : variables) ::setenv(name.c_str(), value.c_str(), 1);
  }
  ~ScopedEnvironment() {
    for (const char* name : kVariables) ::unsetenv(name);
    for (const auto& [name, value] : saved_) ::setenv(name.c_str(), value.c_str(), 1);
  }
  ScopedEnvironment(const ScopedEnvironment&) = delete;
  ScopedEnvironment& operator=(const ScopedEnvironment&) = delete;

private:
  std::map<std::string, std::string> saved_;
};

// The message of the Error(invalid_argument) that reading `variables` throws.
std::string error_reading(const std::map<std::string, std::string>& variables) {
  ScopedEnvironment environment(variables);
  try {
    process_place_from_environment();
  } catch (const Error& error) {
    CHECK(error.code() == Errc::invalid_argument);
    return error.what();
  }
  FAIL("no error");
  return "";
}

const std::map<std::string, std::string> kMaster = {{"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29500"}};

std::map<std::string, std::string> with_master(std::map<std::string, std::string> variables) {
  variables.insert(kMaster.begin(), kMaster.end());
  return variables;
}

}  // namespace

TEST_CASE("environment: no launcher's variables, no place (every rank in this process)") {
  ScopedEnvironment environment(kMaster);
  CHECK_FALSE(process_place_from_environment().has_value());
}

TEST_CASE("environment: torchrun's variables, as rankmesh launch sets them") {
  ScopedEnvironment environment(with_master(
      {{"RANK", "5"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "4"}}));
  std::optional<ProcessPlace> place = process_place_from_environment();
  REQUIRE(place);
  CHECK(place->source == "torchrun");
  CHECK(place->rank == 5);
  CHECK(place->world_size == 8);
  CHECK(place->local_rank == 1);
  CHECK(place->local_world_size == 4);
  CHECK(place->master_addr == "10.0.0.1");
  CHECK(place->master_port == 29500);
}

TEST_CASE("environment: RANKMESH_REGISTRY_FD hands rank 0 its registry socket; other ranks ignore it") {
  {
    ScopedEnvironment environment(
        with_master({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"RANKMESH_REGISTRY_FD", "7"}}));
    std::optional<ProcessPlace> place = process_place_from_environment();
    REQUIRE(place);
    CHECK(place->registry_fd == 7);
  }
  {
    ScopedEnvironment environment(with_master({{"RANK", "0"}, {"WORLD_SIZE", "2"}}));
    CHECK(process_place_from_environment()->registry_fd == -1);
  }
  {
    ScopedEnvironment environment(
        with_master({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"RANKMESH_REGISTRY_FD", "7"}}));
    CHECK(process_place_from_environment()->registry_fd == -1);
  }
  CHECK(error_reading(with_master({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"RANKMESH_REGISTRY_FD", "1"}}))
            .find("RANKMESH_REGISTRY_FD='1'") != std::string::npos);
  CHECK(error_reading(with_master({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"RANKMESH_REGISTRY_FD", "x"}}))
            .find("RANKMESH_REGISTRY_FD='x'") != std::string::npos);
}

TEST_CASE("environment: OpenMPI's variables") {
  ScopedEnvironment environment(with_master({{"OMPI_COMM_WORLD_RANK", "3"},
                                             {"OMPI_COMM_WORLD_SIZE", "4"},
                                             {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                             {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}}));
  std::optional<ProcessPlace> place = process_place_from_environment();
  REQUIRE(place);
  CHECK(place->source == "OpenMPI");
  CHECK(place->rank == 3);
  CHECK(place->world_size == 4);
  CHECK(place->local_rank == 1);
  CHECK(place->local_world_size == 2);
  CHECK(place->master_addr == "10.0.0.1");
  CHECK(place->master_port == 29500);
}

TEST_CASE("environment: Slurm's variables") {
  ScopedEnvironment environment(with_master({{"SLURM_PROCID", "6"},
                                             {"SLURM_NTASKS", "8"},
                                             {"SLURM_LOCALID", "2"},
                                             {"SLURM_NTASKS_PER_NODE", "4"}}));
  std::optional<ProcessPlace> place = process_place_from_environment();
  REQUIRE(place);
  CHECK(place->source == "Slurm");
  CHECK(place->rank == 6);
  CHECK(place->world_size == 8);
  CHECK(place->local_rank == 2);
  CHECK(place->local_world_size == 4);
}

TEST_CASE("environment: without local variables, the node holds the whole world") {
  // srun sets SLURM_NTASKS_PER_NODE only when --ntasks-per-node was given.
  ScopedEnvironment environment(
      with_master({{"SLURM_PROCID", "2"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "2"}}));
  std::optional<ProcessPlace> place = process_place_from_environment();
  REQUIRE(place);
  CHECK(place->local_rank == 2);
  CHECK(place->local_world_size == 4);

  ScopedEnvironment mpi(with_master({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}}));
  place = process_place_from_environment();
  REQUIRE(place);
  CHECK(place->source == "OpenMPI");
  CHECK(place->local_rank == 1);
  CHECK(place->local_world_size == 2);
}

TEST_CASE("environment: torchrun's variables win over the others when several are set") {
  ScopedEnvironment environment(with_master({{"RANK", "0"},
                                             {"WORLD_SIZE", "2"},
                                             {"OMPI_COMM_WORLD_RANK", "1"},
                                             {"OMPI_COMM_WORLD_SIZE", "2"}}));
  std::optional<ProcessPlace> place = process_place_from_environment();
  REQUIRE(place);
  CHECK(place->source == "torchrun");
  CHECK(place->rank == 0);
}

TEST_CASE("environment: errors name the variable that is wrong") {
  CHECK(error_reading(with_master({{"OMPI_COMM_WORLD_RANK", "4"}, {"OMPI_COMM_WORLD_SIZE", "4"}})) ==
        "OMPI_COMM_WORLD_RANK=4 is outside OMPI_COMM_WORLD_SIZE=4");
  CHECK(error_reading(with_master({{"SLURM_PROCID", "9"}, {"SLURM_NTASKS", "8"}})) ==
        "SLURM_PROCID=9 is outside SLURM_NTASKS=8");
  CHECK(error_reading({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"MASTER_PORT", "29500"}}) ==
        "Slurm variables are set but MASTER_ADDR is not (the address where rank 0 hosts the "
        "registry)");
  CHECK(error_reading({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "2"},
                       {"MASTER_PORT", "29500"}}) ==
        "OpenMPI variables are set but MASTER_ADDR is not (the address where rank 0 hosts the "
        "registry)");
  CHECK(error_reading({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"MASTER_ADDR", "10.0.0.1"}}) ==
        "MASTER_PORT is not set");
  CHECK(error_reading(with_master({{"SLURM_PROCID", "0"}})) == "SLURM_NTASKS is not set");
  CHECK(error_reading(with_master({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "0"}})) ==
        "SLURM_NTASKS='0' is not an integer >= 1");
  CHECK(error_reading(with_master({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"},
                                   {"SLURM_NTASKS_PER_NODE", "2(x3)"}})) ==
        "SLURM_NTASKS_PER_NODE='2(x3)' is not an integer >= 1");
  CHECK(error_reading(with_master({{"OMPI_COMM_WORLD_RANK", "-1"}, {"OMPI_COMM_WORLD_SIZE", "2"}})) ==
        "OMPI_COMM_WORLD_RANK='-1' is not an integer >= 0");
  CHECK(error_reading({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}}) ==
        "MASTER_PORT=70000 is not a port");
}

TEST_CASE("environment: RANKMESH_TIMEOUT_SCALE multiplies every default timeout, the failure timeout's 2 s too") {
  const char* before = std::getenv("RANKMESH_TIMEOUT_SCALE");
  const std::optional<std::string> saved = before ? std::optional<std::string>(before) : std::nullopt;
  ::setenv("RANKMESH_TIMEOUT_SCALE", "3", 1);
  const RuntimeOptions scaled;
  CHECK(scaled.failure_timeout == std::chrono::seconds(6));
  CHECK(scaled.join_timeout == std::chrono::seconds(90));
  ::unsetenv("RANKMESH_TIMEOUT_SCALE");
  const RuntimeOptions plain;
  CHECK(plain.failure_timeout == std::chrono::seconds(2));  // the README's documented default
  CHECK(plain.join_timeout == std::chrono::seconds(30));
  if (saved) ::setenv("RANKMESH_TIMEOUT_SCALE", saved->c_str(), 1);
}

TEST_CASE("environment: RANKMESH_SPIN_US overrides RuntimeOptions::spin, and a bad value is an error naming it") {
  ScopedEnvironment no_launcher({});
  const char* before = std::getenv("RANKMESH_SPIN_US");
  const std::optional<std::string> saved = before ? std::optional<std::string>(before) : std::nullopt;
  RuntimeOptions options;
  options.spin = std::chrono::microseconds(50);
  ::setenv("RANKMESH_SPIN_US", "7", 1);
  { Runtime runtime(options); CHECK(spin_budget() == std::chrono::microseconds(7)); }
  ::setenv("RANKMESH_SPIN_US", "0", 1);  // park at once
  { Runtime runtime(options); CHECK(spin_budget() == std::chrono::nanoseconds::zero()); }
  for (const char* bad : {"-1", "50us", "2000000"}) {
    ::setenv("RANKMESH_SPIN_US", bad, 1);
    try {
      Runtime runtime(options);
      FAIL("RANKMESH_SPIN_US=" << bad << " was accepted");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::invalid_config);
      CHECK(std::string(e.what()).find("RANKMESH_SPIN_US") != std::string::npos);
    }
  }
  ::unsetenv("RANKMESH_SPIN_US");
  { Runtime runtime(options); CHECK(spin_budget() == std::chrono::microseconds(50)); }
  if (saved) ::setenv("RANKMESH_SPIN_US", saved->c_str(), 1);
}
