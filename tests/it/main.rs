mod support;

mod node;
