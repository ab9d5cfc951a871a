# Checks that the README's C++ snippet is examples/quickstart.cpp, verbatim, so the snippet a
# reader copies is the program every build compiles and the tests run.
# Invoked by CTest as: cmake -DSOURCE_DIR=... -P readme_snippet.cmake
file(READ ${SOURCE_DIR}/README.md readme)
file(READ ${SOURCE_DIR}/examples/quickstart.cpp program)
string(FIND "${readme}" "```cpp\n${program}```" at)
if(at EQUAL -1)
  message(FATAL_ERROR "README.md does not show examples/quickstart.cpp verbatim in a ```cpp block; "
                      "paste the file into the README's \"Using the library\" section")
endif()
