// The tool's subcommands; each returns the process exit status.
#pragma once

#include <string>
#include <vector>

namespace rankmesh::tool {

int layout_command(const std::vector<std::string>& args);
int launch_command(const std::vector<std::string>& args);
int bench_command(const std::vector<std::string>& args);
int trace_command(const std::vector<std::string>& args);

}  // namespace rankmesh::tool
