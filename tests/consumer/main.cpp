// Builds against the installed headers only; computes one gradient and checks it is finite.
#include <polygrad/polygrad.hpp>

#include <iostream>

int main() {
  polygrad::TransformerConfig config;
  config.layers = 1;
  config.d_model = 8;
  config.heads = 2;
  config.d_ff = 16;
  polygrad::Transformer<float> model(config);
  const polygrad::Matrix<float> x = polygrad::Matrix<float>::Random(5, 8);
  const polygrad::Matrix<float> target = polygrad::Matrix<float>::Zero(5, 8);
  const auto loss = polygrad::mse_loss(model.forward(x), target);
  const polygrad::Matrix<float> dx = model.backward(loss.grad);
  std::cout << "consumer: loss " << loss.value << '\n';
  return dx.allFinite() ? 0 : 1;
}
