import "./style.css";
import { start } from "./app";

start();
