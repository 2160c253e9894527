// Energy and forces of a water dimer from an equiforce export, with libtorch alone.
// Build: g++ -std=c++20 export_example.cpp -I$T/include -I$T/include/torch/csrc/api/include
//        -L$T/lib -ltorch -ltorch_cpu -lc10 -Wl,-rpath,$T/lib -o example
//        (T = the torch package folder; checked with the torch 2.13 CPU wheel's headers)
// Run:   ./example model.pt      (TorchScript)   or   ./example model.pt2   (AOTInductor)
#include <torch/script.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  const std::string path = argv[1];
  const bool aoti = path.size() > 4 && path.substr(path.size() - 4) == ".pt2";
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  // positions (n_atoms, 3) Å and atomic numbers (n_atoms,)
  torch::Tensor pos = torch::tensor({0.00, 0.00, 0.12, 0.00, 0.76, -0.48, 0.00, -0.76, -0.48,
                                     3.00, 0.00, 0.12, 3.00, 0.76, -0.48, 3.00, -0.76, -0.48},
                                    f64).reshape({6, 3});
  torch::Tensor z = torch::tensor({8, 1, 1, 8, 1, 1}, i64);
  // neighbour list: every ordered pair closer than the cutoff (here all of them)
  std::vector<int64_t> ij;
  for (int64_t i = 0; i < 6; ++i)
    for (int64_t j = 0; j < 6; ++j)
      if (i != j) ij.push_back(i), ij.push_back(j);
  torch::Tensor edge_index = torch::tensor(ij, i64).reshape({-1, 2}).t().contiguous();
  torch::Tensor shifts = torch::zeros({edge_index.size(1), 3}, f64);  // open system
  std::vector<torch::Tensor> out;
  std::string meta;
  if (aoti) {
    torch::inductor::AOTIModelPackageLoader loader(path);
    meta = loader.get_metadata()["equiforce.json"];
    out = loader.run({pos, z, edge_index, shifts});
  } else {
    torch::jit::ExtraFilesMap extra{{"equiforce.json", ""}};
    torch::jit::Module module = torch::jit::load(path, torch::kCPU, extra);
    meta = extra["equiforce.json"];
    auto result = module.forward({pos, z, edge_index, shifts}).toTuple();
    for (const auto& value : result->elements()) out.push_back(value.toTensor());
  }
  std::cout << "metadata: " << meta.substr(0, 60) << "...\n";
  std::cout.precision(12);
  std::cout << "energy " << out[0].item<double>() << " eV\n";
  std::cout << "force on atom 0 " << out[1][0] << "\n";
  return 0;
}
