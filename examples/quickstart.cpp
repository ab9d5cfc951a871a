// polygrad quickstart: a small causal transformer whose attention uses the polynomial method,
// one MSE loss, its gradient, and one AdamW step.
#include <iostream>
#include <memory>
#include <string>

#include <polygrad/polygrad.hpp>

int main(int argc, char** argv) {
  using namespace polygrad;
  if (argc > 1) {  // it takes no options: --help says what it does, anything else is an error
    std::cout << "usage: " << argv[0] << "\none AdamW step of a small transformer with "
              << "polynomial attention; prints the loss before and after, and a head's plan\n";
    return std::string(argv[1]) == "--help" ? 0 : 2;
  }
  TransformerConfig config;  // causal, 2 layers, d_model 64, MLP 256
  config.heads = 8;          // d_h = 8
  config.qk_norm = 2.0;      // scores lie in [-2, 2], so the polynomial's error is certified
  auto attention = std::make_shared<PolyAttention<float>>(PolyOptions{});  // eps = 1e-3
  Transformer<float> model(config, attention);
  AdamW<float> optimiser(model.parameters(), AdamWOptions{/*lr=*/1e-2});

  const Matrix<float> x = Matrix<float>::Random(512, config.d_model);  // 512 tokens
  const Matrix<float> target = Matrix<float>::Random(512, config.d_model);
  LossResult<float> loss = mse_loss(model.forward(x), target);
  std::cout << "loss before: " << loss.value << "\n";
  model.backward(loss.grad);  // every parameter's gradient, through the polynomial attention
  optimiser.step();
  std::cout << "loss after:  " << mse_loss(model.forward(x), target).value << "\n";
  std::cout << "layer 0, head 0: " << model.attention_plans()[0][0].describe() << "\n";
}
